"""A guest on guest_memfd memory: what a vCPU sees.

Mirrors guest_memfd_test.c: test_guest_memfd_guest (a memslot served from an MMAP
guest_memfd). ``guest.upstream_gmem_guest`` is that test as written (CPL0, GPA 4 GiB, a whole
page both ways); the other checks run one vCPU on two memslots — RAM at GPA 0 with the code
(and, for the 64-bit variant, a GDT and identity page tables), the guest_memfd slot at
0x200000 (64-bit CPL3, which kvm_pvm runs natively) or 0x10000 (real mode) — to tell the
native from the emulated path.
"""

from __future__ import annotations

import ctypes
from typing import Final

from qmpgmem.engines.kvm import abi, longmode
from qmpgmem.engines.kvm.contract.core import (
    API,
    GMEM,
    GMEM_C,
    INIT_SHARED,
    MMAP,
    SELFTEST,
    Env,
    Mismatch,
    Skip,
    check,
    errno_name,
    run_with_deadline,
)
from qmpgmem.engines.kvm.objects import GuestMemfd, Mapping, Vcpu, Vm

#: Measured on kvm_pvm (this module's guest.* checks): guest code it emulates instead of
#: running (real and protected mode, CPL0) reaches memory through the instruction emulator,
#: which reads and writes a gmem-only memslot through userspace_addr, not the guest_memfd.
PVM_EMULATED_ACCESS: Final = (
    "real-mode/CPL0 guest code is emulated instruction by instruction there, and the "
    "emulator reaches a memslot bound to an MMAP guest_memfd through userspace_addr instead "
    "of the guest_memfd (natively run CPL3 code is served from the file, see "
    "guest.gmem_only_slot); with userspace_addr 0, as the upstream selftest uses, the access "
    "becomes KVM_EXIT_MMIO"
)


# -- a guest on guest_memfd ------------------------------------------------------------------------

#: 64-bit CPL3 code (runs natively everywhere): read the data page → out 0x10; write 0xff
#: there → out 0x11; read again → out 0x10; then out 0x12 forever. Data page at 0x200000.
CODE_CPL3: Final = bytes.fromhex(
    "a0 0000200000000000 e610"  # movabs 0x200000,%al; out %al,$0x10
    "c6042500002000ff e611"  # movb $0xff,0x200000; out %al,$0x11
    "a0 0000200000000000 e610"  # movabs 0x200000,%al; out %al,$0x10
    "e612 ebfc"  # 1: out %al,$0x12; jmp 1b
)
#: The same in real mode (emulated instruction by instruction on kvm_pvm). Data at 0x10000.
CODE_REAL: Final = bytes.fromhex(
    "b80010 8ed8"  # mov $0x1000,%ax; mov %ax,%ds
    "a00000 e610"  # mov 0,%al; out %al,$0x10
    "c6060000ff e611"  # movb $0xff,0; out %al,$0x11
    "a00000 e610"  # mov 0,%al; out %al,$0x10
    "e612 ebfc"  # 1: out %al,$0x12; jmp 1b
)


class Guest:
    """One vCPU whose data page is a guest_memfd slot (or, with ``gmem`` None, plain memory
    at ``userspace_addr`` of ``size`` bytes); ``native`` picks 64-bit CPL3 code (executed by
    the CPU; ``code`` instead of :data:`CODE_CPL3`) over real-mode code (emulated on
    kvm_pvm)."""

    def __init__(
        self,
        env: Env,
        vm: Vm,
        gmem: GuestMemfd | None,
        userspace_addr: int,
        native: bool = True,
        size: int = 0,
        code: bytes = CODE_CPL3,
    ) -> None:
        self.data_gpa = 0x200000 if native else 0x10000
        self.ram = Mapping.anonymous(1 << 20 if native else 0x10000)
        try:
            if native:
                longmode.write_tables(self.ram)
                self.ram.write(longmode.FREE_GPA, code)
            else:
                self.ram.write(0, CODE_REAL)
            vm.set_user_memory_region2(0, 0, self.ram.size, self.ram.addr)
            if gmem is None:
                vm.set_user_memory_region2(1, self.data_gpa, size, userspace_addr)
            else:
                vm.set_user_memory_region2(
                    1, self.data_gpa, gmem.size, userspace_addr, GMEM, gmem.fd, 0
                )
            self.vcpu: Vcpu = env.vcpu(vm)
            if native:
                longmode.enter_user_long_mode(self.vcpu, longmode.FREE_GPA, 0x80000)
            else:
                sregs = self.vcpu.get_sregs()
                sregs.cs.base, sregs.cs.selector = 0, 0
                self.vcpu.set_sregs(sregs)
                self.vcpu.set_regs(abi.kvm_regs(rip=0, rflags=2))
        except BaseException:
            self.ram.close()
            raise

    def next_out(self) -> tuple[int, int]:
        """Run to the next port write: (port, value); any other exit is a Mismatch."""
        run = self.vcpu.kvm_run
        for _ in range(1000):
            try:
                reason = self.vcpu.run()
            except InterruptedError:
                continue
            except OSError as exc:
                reason = int(run.exit_reason)
                if reason == abi.Exit.MEMORY_FAULT:
                    mf = run.memory_fault
                    raise Mismatch(
                        f"KVM_RUN failed with {errno_name(exc.errno or 0)}, KVM_EXIT_MEMORY_FAULT "
                        f"gpa {mf.gpa:#x} size {mf.size:#x} flags {mf.flags:#x}"
                    ) from None
                raise Mismatch(f"KVM_RUN failed with {errno_name(exc.errno or 0)}") from None
            if reason == abi.Exit.IO and run.io.direction == abi.KVM_EXIT_IO_OUT:
                value = ctypes.c_uint8.from_address(self.vcpu.run_addr + run.io.data_offset)
                return run.io.port, value.value
            if reason == abi.Exit.MMIO:
                raise Mismatch(
                    f"the guest's access exited with KVM_EXIT_MMIO at GPA {run.mmio.phys_addr:#x}"
                )
            raise Mismatch(f"unexpected exit {exit_name(reason)}")
        raise Mismatch("the guest did not reach its next port write")

    def close(self) -> None:
        self.ram.close()


def exit_name(reason: int) -> str:
    try:
        return f"KVM_EXIT_{abi.Exit(reason).name}"
    except ValueError:
        return f"exit {reason}"


def _shared_gmem(env: Env, vm: Vm, size: int) -> GuestMemfd:
    if env.bindable_flags(vm) & (MMAP | INIT_SHARED) != MMAP | INIT_SHARED:
        raise Skip("MMAP|INIT_SHARED is not offered")
    return vm.create_guest_memfd(size, MMAP | INIT_SHARED)


def _gmem_only(env: Env, native: bool) -> None:
    with env.vm() as vm:
        size = 16 * env.page
        with _shared_gmem(env, vm, size) as g:
            with g.mmap() as m:
                m.write(0, b"\xaa" * size)
            guest = Guest(env, vm, g, 0, native)
            try:
                port, value = guest.next_out()
                if (port, value) != (0x10, 0xAA):
                    raise Mismatch(f"the guest read {value:#x} (port {port:#x}), not 0xaa")
                if guest.next_out()[0] != 0x11:
                    raise Mismatch("the guest did not report its write")
                with g.mmap() as m:
                    if m.read(0, 1) != b"\xff":
                        raise Mismatch(f"the host sees {m.read(0, 1)!r}, not the guest's 0xff")
            finally:
                guest.close()


_GMEM_ONLY = (
    "a memslot bound to an MMAP|INIT_SHARED guest_memfd with userspace_addr 0 is served from "
    "the file: the guest reads what the host wrote through its mapping (0xaa), and the host "
    "sees the guest's write (0xff)"
)
_GMEM_ONLY_SOURCE = (
    f"{SELFTEST}: test_guest_memfd_guest; {API}: GUEST_MEMFD_FLAG_MMAP (the fault is always "
    "consumed from guest_memfd)"
)


@check("guest.gmem_only_slot", f"{_GMEM_ONLY} (64-bit CPL3 guest code)", _GMEM_ONLY_SOURCE)
def _guest_gmem_only(env: Env) -> None:
    _gmem_only(env, native=True)


@check(
    "guest.gmem_only_slot_real_mode",
    f"{_GMEM_ONLY} (real-mode guest code, which hardware KVM runs natively)",
    _GMEM_ONLY_SOURCE,
    deviations={"kvm_pvm": PVM_EMULATED_ACCESS},
)
def _guest_gmem_only_real(env: Env) -> None:
    _gmem_only(env, native=False)


@check(
    "guest.punch_hole",
    "after the host punches a hole in a bound guest_memfd the guest reads zeros there",
    f"{SELFTEST}: test_mmap_supported; x86/private_mem_conversions_test.c (punch hole "
    "zeroes the page)",
)
def _guest_punch(env: Env) -> None:
    with env.vm() as vm:
        size = 16 * env.page
        with _shared_gmem(env, vm, size) as g, g.mmap() as m:
            m.write(0, b"\xaa" * size)
            # userspace_addr = the file's own mapping: the same memory whichever of the two
            # the backend serves the slot from
            guest = Guest(env, vm, g, m.addr)
            try:
                if guest.next_out() != (0x10, 0xAA):
                    raise Mismatch("the guest did not read the host's 0xaa")
                if guest.next_out()[0] != 0x11:
                    raise Mismatch("the guest did not report its write")
                g.punch_hole(0, env.page)
                port, value = guest.next_out()
                if (port, value) != (0x10, 0):
                    raise Mismatch(f"after the punch the guest read {value:#x}, not 0")
            finally:
                guest.close()


@check(
    "guest.gmem_closed_under_slot",
    "once the last reference to a bound guest_memfd is gone (fd closed, no mapping), a guest "
    "access to its range ends KVM_RUN with EFAULT and KVM_EXIT_MEMORY_FAULT for that GPA",
    f"{GMEM_C}: kvm_gmem_release (zaps the file's mappings), kvm_gmem_get_pfn (-EFAULT without "
    f"a file); {API}: KVM_EXIT_MEMORY_FAULT",
)
def _guest_closed(env: Env) -> None:
    with env.vm() as vm:
        size = 16 * env.page
        g = _shared_gmem(env, vm, size)
        try:
            with g.mmap() as m:
                m.write(0, b"\xaa" * size)
            guest = Guest(env, vm, g, 0)
        except BaseException:
            g.close()
            raise
        try:
            if guest.next_out() != (0x10, 0xAA):
                raise Mismatch("the guest did not read the host's 0xaa")
            if guest.next_out()[0] != 0x11:
                raise Mismatch("the guest did not report its write")
            g.close()
            try:
                port, value = guest.next_out()
            except Mismatch as exc:
                if "KVM_EXIT_MEMORY_FAULT" in str(exc) and f"gpa {guest.data_gpa:#x}" in str(exc):
                    return
                raise
            raise Mismatch(f"the guest still read {value:#x} (port {port:#x}) after the close")
        finally:
            g.close()
            guest.close()


# -- test_guest_memfd_guest as upstream writes it --------------------------------------------------

#: Upstream's guest_code(mem, size) at CPL0 (rdi = gpa, rsi = size): every byte must be 0xaa
#: (else out the offset to port 0x13 and the byte to 0x14), then memset 0xff → out 0x11.
CODE_UPSTREAM: Final = bytes.fromhex(
    "4889fa 4889f1"  # mov %rdi,%rdx; mov %rsi,%rcx
    "803aaa 7513"  # 1: cmpb $0xaa,(%rdx); jne bad
    "48ffc2 48ffc9 75f3"  # inc %rdx; dec %rcx; jnz 1b
    "4889f1 b0ff f3aa"  # mov %rsi,%rcx; mov $0xff,%al; rep stosb
    "e611 ebfe"  # out %al,$0x11; jmp .
    "4889d0 4829f8 e713"  # bad: mov %rdx,%rax; sub %rdi,%rax; out %eax,$0x13
    "0fb602 e714 ebfe"  # movzbl (%rdx),%eax; out %eax,$0x14; jmp .
)
#: Where upstream puts the slot: past the first 4 GiB (slot 0, the PCI hole and MMIO below).
UPSTREAM_GPA: Final = 4 << 30


def _port_value(vcpu: Vcpu) -> tuple[int, int]:
    run = vcpu.kvm_run
    data = vcpu.run_addr + run.io.data_offset
    width = {1: ctypes.c_uint8, 2: ctypes.c_uint16, 4: ctypes.c_uint32}[run.io.size]
    return run.io.port, width.from_address(data).value


@check(
    "guest.upstream_gmem_guest",
    "as test_guest_memfd_guest writes it: a page-sized MMAP|INIT_SHARED guest_memfd bound at "
    "GPA 4 GiB with userspace_addr NULL, filled with 0xaa through a mapping the host unmaps "
    "before the run; the guest (64-bit CPL0) finds 0xaa in every byte and fills the page with "
    "0xff, which every byte of a new host mapping then shows",
    f"{SELFTEST}: test_guest_memfd_guest, guest_code",
    deviations={"kvm_pvm": PVM_EMULATED_ACCESS},
)
def _guest_upstream(env: Env) -> None:
    upstream_gmem_guest(env)


@check(
    "guest.upstream_gmem_guest_cpl3",
    "test_guest_memfd_guest's shape (page-sized MMAP|INIT_SHARED guest_memfd at GPA 4 GiB, "
    "userspace_addr NULL, host mapping gone before the run, every byte checked both ways) "
    "with the same guest code at CPL3, which every backend runs natively",
    f"{SELFTEST}: test_guest_memfd_guest, guest_code",
)
def _guest_upstream_cpl3(env: Env) -> None:
    upstream_gmem_guest(env, cpl=3)


def upstream_gmem_guest(env: Env, fill: int = 0xAA, cpl: int = 0) -> None:
    """The body of ``guest.upstream_gmem_guest``; the host fills the page with ``fill`` (the
    guest expects 0xaa), and ``cpl=3`` runs the same code at CPL3 — tests use both to show the
    check failing and the code working where CPL0 is emulated."""
    enter = longmode.enter_kernel_long_mode if cpl == 0 else longmode.enter_user_long_mode
    with env.vm() as vm, Mapping.anonymous(1 << 20) as ram:
        size = env.page
        with _shared_gmem(env, vm, size) as g:
            longmode.write_tables(ram)
            longmode.map_gib(ram, UPSTREAM_GPA >> 30)
            ram.write(longmode.FREE_GPA, CODE_UPSTREAM)
            vm.set_user_memory_region2(0, 0, ram.size, ram.addr)
            vm.set_user_memory_region2(1, UPSTREAM_GPA, size, 0, GMEM, g.fd, 0)
            with g.mmap() as m:
                m.write(0, bytes([fill]) * size)
            vcpu = env.vcpu(vm)
            enter(vcpu, longmode.FREE_GPA, 0x80000, None, rdi=UPSTREAM_GPA, rsi=size)
            reason = run_with_deadline(vcpu, 10.0)
            if reason is None:
                raise Mismatch("KVM_RUN did not return within 10 s")
            if reason == abi.Exit.MMIO:
                addr = vcpu.kvm_run.mmio.phys_addr
                raise Mismatch(f"the guest's access exited with KVM_EXIT_MMIO at GPA {addr:#x}")
            if reason != abi.Exit.IO:
                raise Mismatch(f"unexpected exit {exit_name(reason)}")
            port, value = _port_value(vcpu)
            if port == 0x13:
                offset = value
                if run_with_deadline(vcpu, 10.0) != abi.Exit.IO:
                    raise Mismatch(f"the guest found a byte other than 0xaa at offset {offset}")
                raise Mismatch(
                    f"the guest found {_port_value(vcpu)[1]:#x} at offset {offset}, not 0xaa"
                )
            if port != 0x11:
                raise Mismatch(f"the guest wrote port {port:#x}, not 0x11 (done)")
            with g.mmap() as m:
                seen = m.read(0, size)
            bad = next((i for i, b in enumerate(seen) if b != 0xFF), None)
            if bad is not None:
                raise Mismatch(f"the host sees {seen[bad]:#x} at offset {bad}, not 0xff")
