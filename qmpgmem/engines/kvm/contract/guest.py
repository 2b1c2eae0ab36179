"""A guest on guest_memfd memory, and read-only memslots: what a vCPU sees.

Mirrors guest_memfd_test.c: test_guest_memfd_guest (a memslot served from an MMAP guest_memfd)
and api.rst's KVM_MEM_READONLY promise. One vCPU on two memslots: RAM at GPA 0 with the code
(and, for the 64-bit variant, a GDT and identity page tables), the guest_memfd slot at
0x200000 (64-bit) or 0x10000 (real mode).
"""

from __future__ import annotations

import ctypes
import signal
import struct
import threading
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
    on_emulated_cpu,
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


#: Measured on kvm_pvm (memslot.readonly_descriptor): the implicit accessed-bit write.
PVM_READONLY_DESCRIPTOR: Final = (
    "KVM_RUN never returns when the instruction kvm_pvm emulates (a far jump loading CS) has "
    "to set the accessed bit of a descriptor in read-only memory; the vCPU retries it forever "
    "(an explicit store to the same slot does exit with KVM_EXIT_MMIO, see "
    "memslot.readonly_store). This is why a ROM whose GDT sits in a read-only ROM hangs "
    "after setting CR0.PE on pc/q35, and why the direct engine maps its ROM as RAM, as "
    "microvm does"
)


#: Measured on kvm_pvm (bind.same_range_twice): the pre-7.2 errno.
PVM_BIND_TWICE: Final = (
    "measured here (Linux 6.18, kvm_pvm): both bindings of an occupied file range fail with "
    "EINVAL, the errno upstream kvm_gmem_bind gave before Linux 7.2 (its common -EINVAL exit); "
    "the kernel under kvm_pvm has not picked up the 7.2 change to -EEXIST"
)


#: Measured in the lab (kvm_amd in L1 on QEMU TCG's SVM, Linux 7.2.13; memslot.readonly_descriptor).
TCG_SVM_NO_ACCESSED_BIT: Final = (
    "seen only on QEMU TCG's SVM (the lab's emulated CPU): its far jump loads CS without "
    "setting the descriptor's accessed bit (QEMU target/i386/tcg/seg_helper.c: "
    "helper_ljmp_protected has no accessed-bit store; helper_load_seg, for data segments, has "
    "one), so no write reaches the read-only slot, no nested page fault reaches KVM and there "
    "is nothing to post as KVM_EXIT_MMIO; the guest runs on and the descriptor stays "
    "0x00cf9a000000ffff. Upstream expects the CPU to set the bit on the load (AMD APM, Intel "
    "SDM), the write to fault on the read-only page and KVM to post it as KVM_EXIT_MMIO"
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
    the CPU) over real-mode code (emulated on kvm_pvm)."""

    def __init__(
        self,
        env: Env,
        vm: Vm,
        gmem: GuestMemfd | None,
        userspace_addr: int,
        native: bool = True,
        size: int = 0,
    ) -> None:
        self.data_gpa = 0x200000 if native else 0x10000
        self.ram = Mapping.anonymous(1 << 20 if native else 0x10000)
        try:
            if native:
                longmode.write_tables(self.ram)
                self.ram.write(longmode.FREE_GPA, CODE_CPL3)
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
    if env.offered_flags(vm) & (MMAP | INIT_SHARED) != MMAP | INIT_SHARED:
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


# -- read-only memslots (the ROM's kind of memory) --------------------------------------------


#: Real-mode code at GPA 0: lgdt from a GDT in a read-only slot at 0x10000, CR0.PE, far jump
#: to 32-bit code (loading CS sets the descriptor's accessed bit: a write to the read-only
#: slot), which writes port 0x10 and spins.
CODE_PE_SWITCH: Final = bytes.fromhex(
    "660f01160001"  # lgdtl 0x100
    "0f20c0 6683c801 0f22c0"  # mov %cr0,%eax; or $1,%eax; mov %eax,%cr0
    "66ea000200000800"  # ljmpl $0x08,$0x200
)
GDT_DESC_AT: Final = 0x100
TARGET32_AT: Final = 0x200
CODE32_OUT: Final = bytes.fromhex("e610 ebfe")  # out %al,$0x10; jmp .
RO_GPA: Final = 0x10000
#: null, flat 32-bit code with the accessed bit clear (0x9a), flat data (0x92)
RO_GDT: Final = (0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)
#: 64-bit CPL3: movb $1,0x200000 (the read-only slot); out %al,$0x10; jmp .
CODE_CPL3_STORE: Final = bytes.fromhex("c60425000020 0001 e610 ebfe")


def _run_with_deadline(vcpu: Vcpu, seconds: float) -> int | None:
    """KVM_RUN once, kicked out after ``seconds``: the exit reason, or None if it hung."""
    from qmpgmem.engines.kvm.vcpu_thread import KICK_SIGNAL, install_kick_signal

    if not install_kick_signal():
        raise Skip("a hung KVM_RUN can only be interrupted from the main thread's signal setup")
    me = threading.get_ident()
    done = threading.Event()

    def kick() -> None:
        if not done.is_set():
            vcpu.kvm_run.immediate_exit = 1
            signal.pthread_kill(me, KICK_SIGNAL)

    timer = threading.Timer(seconds, kick)
    timer.start()
    try:
        return vcpu.run()
    except InterruptedError:
        return None
    finally:
        done.set()
        timer.cancel()
        vcpu.kvm_run.immediate_exit = 0


@check(
    "memslot.readonly_store",
    "a guest store into a KVM_MEM_READONLY memslot is posted to userspace as KVM_EXIT_MMIO "
    "(a write at that GPA) and leaves the memory unchanged (64-bit CPL3 store)",
    f"{API}: KVM_SET_USER_MEMORY_REGION (KVM_MEM_READONLY)",
)
def _readonly_store(env: Env) -> None:
    with env.vm() as vm, Mapping.anonymous(1 << 20) as ram, Mapping.anonymous(env.page) as ro:
        longmode.write_tables(ram)
        ram.write(longmode.FREE_GPA, CODE_CPL3_STORE)
        vm.set_user_memory_region(0, 0, ram.size, ram.addr)
        vm.set_user_memory_region(1, 0x200000, ro.size, ro.addr, abi.KVM_MEM_READONLY)
        vcpu = env.vcpu(vm)
        longmode.enter_user_long_mode(vcpu, longmode.FREE_GPA, 0x80000)
        reason = _run_with_deadline(vcpu, 1.0)
        if reason is None:
            raise Mismatch("KVM_RUN did not return within 1 s")
        run = vcpu.kvm_run
        if reason != abi.Exit.MMIO or not run.mmio.is_write or run.mmio.phys_addr != 0x200000:
            raise Mismatch(f"the store gave {exit_name(reason)}, not an MMIO write at 0x200000")
        if ro.read(0, 1) != b"\x00":
            raise Mismatch("the read-only memory changed")


@check(
    "memslot.readonly_descriptor",
    "loading a segment from a GDT in a KVM_MEM_READONLY memslot, which sets the "
    "descriptor's accessed bit, is posted to userspace as a KVM_EXIT_MMIO write inside the "
    "GDT; the guest then goes on (real mode → protected mode far jump)",
    f"{API}: KVM_SET_USER_MEMORY_REGION (KVM_MEM_READONLY: writes are posted to userspace "
    "as KVM_EXIT_MMIO exits)",
    deviations={
        "kvm_pvm": PVM_READONLY_DESCRIPTOR,
        on_emulated_cpu("kvm_amd"): TCG_SVM_NO_ACCESSED_BIT,
    },
)
def _readonly_descriptor(env: Env) -> None:
    with env.vm() as vm, Mapping.anonymous(0x10000) as ram, Mapping.anonymous(env.page) as ro:
        ram.write(0, CODE_PE_SWITCH)
        ram.write(GDT_DESC_AT, struct.pack("<HI", 8 * len(RO_GDT) - 1, RO_GPA))
        ram.write(TARGET32_AT, CODE32_OUT)
        ro.write(0, struct.pack(f"<{len(RO_GDT)}Q", *RO_GDT))
        vm.set_user_memory_region(0, 0, ram.size, ram.addr)
        vm.set_user_memory_region(1, RO_GPA, ro.size, ro.addr, abi.KVM_MEM_READONLY)
        vcpu = env.vcpu(vm)
        sregs = vcpu.get_sregs()
        sregs.cs.base, sregs.cs.selector = 0, 0
        vcpu.set_sregs(sregs)
        vcpu.set_regs(abi.kvm_regs(rip=0, rflags=2))
        saw_mmio = False
        for _ in range(16):
            reason = _run_with_deadline(vcpu, 1.0)
            if reason is None:
                raise Mismatch(
                    "KVM_RUN did not return within 1 s"
                    + (" after the MMIO exit" if saw_mmio else " (no exit at all)")
                )
            run = vcpu.kvm_run
            if reason == abi.Exit.MMIO:
                addr = run.mmio.phys_addr
                if not run.mmio.is_write or not RO_GPA <= addr < RO_GPA + 8 * len(RO_GDT):
                    raise Mismatch(
                        f"an MMIO {'write' if run.mmio.is_write else 'read'} at {addr:#x}"
                    )
                saw_mmio = True
                continue
            if reason == abi.Exit.IO and run.io.port == 0x10:
                if saw_mmio:
                    return
                code = struct.unpack_from("<Q", ro.read(8, 8))[0]
                if code != RO_GDT[1]:
                    raise Mismatch(
                        f"the accessed-bit write reached read-only memory without an exit "
                        f"(code descriptor now {code:#018x})"
                    )
                raise Mismatch(
                    "the guest reached protected mode with no accessed-bit write at all: no "
                    f"exit, and the code descriptor in read-only memory is still {code:#018x} "
                    "(accessed bit clear)"
                )
            raise Mismatch(f"unexpected exit {exit_name(reason)}")
        raise Mismatch("the guest did not reach protected mode")
