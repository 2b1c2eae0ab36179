"""The guest_memfd kernel contract as named checks against the running kernel.

Why checks and not scenarios: most of the contract is about the ioctls themselves (which flags
KVM_CREATE_GUEST_MEMFD takes, what a second binding of a range gets, what fallocate accepts),
not about what a guest sees, so each check drives the kernel directly with :mod:`.objects`.

Every check carries the upstream expectation and where it comes from (Linux 6.18, and 7.2
where upstream changed an errno since:
tools/testing/selftests/kvm/guest_memfd_test.c, set_memory_region_test.c,
Documentation/virt/kvm/api.rst, virt/kvm/guest_memfd.c). A result is one of:

* ``passed``   — the kernel does what upstream promises;
* ``failed``   — it does not, and nothing explains why;
* ``deviation`` — it does not, on a backend whose difference is measured and written down in
  the check (``deviations``, keyed by backend, or by :func:`on_emulated_cpu` of it for what
  only an emulated CPU such as the lab's QEMU TCG does); the expectation itself is never
  weakened for a backend;
* ``skipped``  — the host cannot run the check (the reason says what is missing).

docs/kernel-contract.md lists the checks; ``python -m qmpgmem.engines.kvm.contract`` runs them.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import os
import signal
import struct
import subprocess
import sys as _sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Final

from qmpgmem.engines.kvm import abi, longmode
from qmpgmem.engines.kvm.backend import kvm_backend
from qmpgmem.engines.kvm.cpuid import vcpu_cpuid
from qmpgmem.engines.kvm.objects import PAGE_SIZE, GuestMemfd, Kvm, Mapping, Vcpu, Vm

MMAP: Final = abi.GUEST_MEMFD_FLAG_MMAP
INIT_SHARED: Final = abi.GUEST_MEMFD_FLAG_INIT_SHARED
GMEM: Final = abi.KVM_MEM_GUEST_MEMFD

SELFTEST: Final = "tools/testing/selftests/kvm/guest_memfd_test.c"
SLOTTEST: Final = "tools/testing/selftests/kvm/set_memory_region_test.c"
API: Final = "Documentation/virt/kvm/api.rst"
GMEM_C: Final = "virt/kvm/guest_memfd.c"

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


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    DEVIATION = "deviation"
    SKIPPED = "skipped"


class Mismatch(Exception):
    """The kernel did something other than the expectation; the message says what."""


class Skip(Exception):
    """The host cannot run this check; the message says why."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    expectation: str
    source: str
    backend: str
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.outcome.value:9} {self.name}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class Env:
    """What a check needs: the open /dev/kvm and the facts that pick its path."""

    kvm: Kvm
    backend: str
    page: int = PAGE_SIZE
    #: the CPU under KVM is emulated (QEMU TCG, as in the lab): picks the deviations keyed
    #: :func:`on_emulated_cpu` over the backend's own
    cpu_emulated: bool = False

    def vcpu(self, vm: Vm) -> Vcpu:
        """vCPU 0 with its CPUID set, as the kernel selftests create every vCPU
        (vm_arch_vcpu_add → vcpu_init_cpuid): KVM_SET_SREGS checks EFER against it."""
        vcpu = vm.create_vcpu(0)
        vcpu.set_cpuid(vcpu_cpuid(self.kvm.supported_cpuid()))
        return vcpu

    @contextlib.contextmanager
    def vm(self, vm_type: int = 0) -> Iterator[Vm]:
        with self.kvm.create_vm(vm_type) as vm:
            yield vm

    def offered_flags(self, vm: Vm) -> int:
        if vm.check_extension(abi.Cap.GUEST_MEMFD) <= 0:
            raise Skip("KVM_CAP_GUEST_MEMFD is 0 on a default VM")
        return vm.check_extension(abi.Cap.GUEST_MEMFD_FLAGS)

    def flag_sets(self, vm: Vm) -> list[int]:
        """The flag combinations the selftest walks: 0, MMAP, MMAP|INIT_SHARED (if offered)."""
        offered = self.offered_flags(vm)
        sets = [0]
        if offered & MMAP:
            sets.append(MMAP)
            if offered & INIT_SHARED:
                sets.append(MMAP | INIT_SHARED)
        return sets


def on_emulated_cpu(backend: str) -> str:
    """The deviation key for ``backend`` on an emulated CPU (QEMU TCG's SVM or VMX, as in the
    lab): a difference measured only there is the emulation's, not the backend's."""
    return f"{backend} on an emulated CPU"


@dataclass(frozen=True)
class Check:
    name: str
    expectation: str
    source: str
    body: Callable[[Env], None]
    #: backend (or :func:`on_emulated_cpu` of it) → the measured reason a mismatch there is a
    #: known deviation
    deviations: dict[str, str] = field(default_factory=dict)

    def deviation_key(self, env: Env) -> str | None:
        """Which recorded deviation applies here: the emulated-CPU one on an emulated CPU,
        else the backend's own; None when the check records none for this host."""
        keys = [on_emulated_cpu(env.backend)] if env.cpu_emulated else []
        keys.append(env.backend)
        return next((k for k in keys if k in self.deviations), None)

    def run(self, env: Env) -> CheckResult:
        def result(outcome: Outcome, detail: str = "") -> CheckResult:
            return CheckResult(
                self.name, outcome, self.expectation, self.source, env.backend, detail
            )

        try:
            self.body(env)
        except Skip as exc:
            return result(Outcome.SKIPPED, str(exc))
        except (Mismatch, OSError) as exc:
            observed = str(exc) if isinstance(exc, Mismatch) else f"unexpected error: {exc}"
            key = self.deviation_key(env)
            if key is not None:
                reason = self.deviations[key]
                return result(Outcome.DEVIATION, f"{key}: {reason}; observed: {observed}")
            return result(Outcome.FAILED, observed)
        key = self.deviation_key(env)
        if key is not None:
            return result(Outcome.PASSED, f"the known {key} deviation did not show")
        return result(Outcome.PASSED)


CHECKS: list[Check] = []


def check(
    name: str, expectation: str, source: str, deviations: dict[str, str] | None = None
) -> Callable[[Callable[[Env], None]], Callable[[Env], None]]:
    def register(body: Callable[[Env], None]) -> Callable[[Env], None]:
        CHECKS.append(Check(name, expectation, source, body, dict(deviations or {})))
        return body

    return register


# -- helpers ---------------------------------------------------------------------------------------


def _name(err: int) -> str:
    return errno.errorcode.get(err, str(err))


def expect_errno(what: str, call: Callable[[], object], *allowed: int) -> None:
    """``call`` must fail with one of ``allowed`` (any errno when none is given)."""
    try:
        value = call()
    except OSError as exc:
        if allowed and exc.errno not in allowed:
            want = "/".join(_name(e) for e in allowed)
            raise Mismatch(f"{what} failed with {_name(exc.errno or 0)}, not {want}") from None
        return
    if isinstance(value, GuestMemfd | Mapping):
        value.close()
    raise Mismatch(f"{what} succeeded")


def expect_ok(what: str, call: Callable[[], object]) -> object:
    try:
        return call()
    except OSError as exc:
        raise Mismatch(f"{what} failed: {_name(exc.errno or 0)}") from None


# -- KVM_CREATE_GUEST_MEMFD ------------------------------------------------------------------------


@check(
    "create.flags",
    "every flag bit KVM_CAP_GUEST_MEMFD_FLAGS reports is accepted; every other bit of the "
    "64 is refused with EINVAL",
    f"{SELFTEST}: test_guest_memfd_flags; {API}: KVM_CREATE_GUEST_MEMFD",
)
def _create_flags(env: Env) -> None:
    with env.vm() as vm:
        offered = env.offered_flags(vm)
        for bit in range(64):
            flag = 1 << bit
            if flag & offered:
                gmem = expect_ok(f"flag {flag:#x}", partial(vm.create_guest_memfd, env.page, flag))
                assert isinstance(gmem, GuestMemfd)
                gmem.close()
            else:
                expect_errno(
                    f"flag {flag:#x}",
                    partial(vm.create_guest_memfd, env.page, flag),
                    errno.EINVAL,
                )


@check(
    "create.size",
    "a size that is 0 or not a multiple of the page size is refused with EINVAL",
    f"{SELFTEST}: test_create_guest_memfd_invalid_sizes; {GMEM_C}: kvm_gmem_create",
)
def _create_size(env: Env) -> None:
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            for size in [0, *range(1, env.page)]:
                expect_errno(
                    f"size {size} flags {flags:#x}",
                    partial(vm.create_guest_memfd, size, flags),
                    errno.EINVAL,
                )


@check(
    "create.multiple",
    "two guest_memfds of one VM are distinct files (own inode) with the sizes asked for",
    f"{SELFTEST}: test_create_guest_memfd_multiple",
)
def _create_multiple(env: Env) -> None:
    with (
        env.vm() as vm,
        vm.create_guest_memfd(env.page) as a,
        vm.create_guest_memfd(2 * env.page) as b,
    ):
        sa, sb = os.fstat(a.fd), os.fstat(b.fd)
        if (sa.st_size, sb.st_size) != (env.page, 2 * env.page):
            raise Mismatch(f"st_size {sa.st_size} and {sb.st_size}")
        if sa.st_ino == sb.st_ino:
            raise Mismatch("both files have inode {sa.st_ino}")


@check(
    "file.read_write",
    "read, write, pread and pwrite on a guest_memfd fail",
    f"{SELFTEST}: test_file_read_write",
)
def _file_read_write(env: Env) -> None:
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            with vm.create_guest_memfd(4 * env.page, flags) as g:
                expect_errno(f"read (flags {flags:#x})", lambda: os.read(g.fd, 64))
                expect_errno(f"write (flags {flags:#x})", lambda: os.write(g.fd, bytes(64)))
                expect_errno(f"pread (flags {flags:#x})", lambda: os.pread(g.fd, 64, 0))
                expect_errno(f"pwrite (flags {flags:#x})", lambda: os.pwrite(g.fd, bytes(64), 0))


@check(
    "file.size",
    "fstat gives the size asked for and the page size as st_blksize; the size never changes",
    f"{SELFTEST}: test_file_size; {API}: KVM_CREATE_GUEST_MEMFD (cannot be resized)",
)
def _file_size(env: Env) -> None:
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            with vm.create_guest_memfd(4 * env.page, flags) as g:
                st = os.fstat(g.fd)
                if st.st_size != 4 * env.page or st.st_blksize != env.page:
                    raise Mismatch(f"st_size {st.st_size}, st_blksize {st.st_blksize}")
                expect_errno("ftruncate", lambda: os.ftruncate(g.fd, 8 * env.page))


# -- mmap ------------------------------------------------------------------------------------------


@check(
    "mmap.without_flag",
    "without GUEST_MEMFD_FLAG_MMAP, mmap of the file fails",
    f"{SELFTEST}: test_mmap_not_supported",
)
def _mmap_without_flag(env: Env) -> None:
    with env.vm() as vm, vm.create_guest_memfd(4 * env.page, 0) as g:
        expect_errno("mmap of one page", lambda: Mapping.of_fd(g.fd, env.page))
        expect_errno("mmap of the file", lambda: Mapping.of_fd(g.fd, 4 * env.page))


@check(
    "mmap.private_cow",
    "a MAP_PRIVATE (copy-on-write) mapping of an MMAP guest_memfd is refused",
    f"{SELFTEST}: test_mmap_cow",
)
def _mmap_cow(env: Env) -> None:
    from qmpgmem.engines.kvm import sys as ksys

    with env.vm() as vm:
        sets = [f for f in env.flag_sets(vm) if f & MMAP]
        if not sets:
            raise Skip("GUEST_MEMFD_FLAG_MMAP is not offered")
        for flags in sets:
            with vm.create_guest_memfd(4 * env.page, flags) as g:
                prot = ksys.PROT_READ | ksys.PROT_WRITE

                def private_map(fd: int = g.fd, prot: int = prot) -> Mapping:
                    return Mapping(
                        ksys.mmap(4 * env.page, prot, ksys.MAP_PRIVATE, fd), 4 * env.page
                    )

                expect_errno(f"MAP_PRIVATE (flags {flags:#x})", private_map)


@check(
    "mmap.shared_punch",
    "with MMAP|INIT_SHARED the file maps MAP_SHARED read/write; a punched page reads back as "
    "zeros, the others keep their bytes, and the page can be written again",
    f"{SELFTEST}: test_mmap_supported",
)
def _mmap_shared(env: Env) -> None:
    with env.vm() as vm:
        if env.offered_flags(vm) & (MMAP | INIT_SHARED) != MMAP | INIT_SHARED:
            raise Skip("MMAP|INIT_SHARED is not offered")
        size = 4 * env.page
        with vm.create_guest_memfd(size, MMAP | INIT_SHARED) as g, g.mmap() as m:
            m.write(0, b"\xaa" * size)
            if m.read(0, size) != b"\xaa" * size:
                raise Mismatch("the bytes written through the mapping did not read back")
            g.punch_hole(0, env.page)
            if m.read(0, env.page) != bytes(env.page):
                raise Mismatch("the punched page does not read as zeros")
            if m.read(env.page, size - env.page) != b"\xaa" * (size - env.page):
                raise Mismatch("pages outside the hole changed")
            m.write(0, b"\xaa" * env.page)
            if m.read(0, size) != b"\xaa" * size:
                raise Mismatch("the punched page could not be written again")


_TOUCH = r"""
import ctypes, sys
fd, length, ok, bad = map(int, sys.argv[1:5])
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
c = ctypes
libc.mmap.argtypes = (c.c_void_p, c.c_size_t, c.c_int, c.c_int, c.c_int, c.c_long)
addr = libc.mmap(None, length, 3, 1, fd, 0)
if addr in (None, ctypes.c_void_p(-1).value):
    sys.exit(3)
ctypes.memset(addr, 0xaa, ok)
sys.stdout.write("touched\n"); sys.stdout.flush()
ctypes.string_at(addr + bad, 1)
sys.exit(0)
"""


def _touch_in_child(gmem: GuestMemfd, length: int, ok: int, bad: int) -> tuple[int, str]:
    """Map ``length`` bytes in a child, write ``ok`` bytes, read byte ``bad``: (rc, stdout)."""
    proc = subprocess.run(
        [_sys.executable, "-I", "-S", "-c", _TOUCH, str(gmem.fd), str(length), str(ok), str(bad)],
        pass_fds=(gmem.fd,),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return proc.returncode, proc.stdout


@check(
    "mmap.fault_beyond_size",
    "touching a mapping past the end of the file raises SIGBUS; the bytes inside stay written",
    f"{SELFTEST}: test_fault_overflow",
)
def _mmap_overflow(env: Env) -> None:
    with env.vm() as vm:
        if env.offered_flags(vm) & (MMAP | INIT_SHARED) != MMAP | INIT_SHARED:
            raise Skip("MMAP|INIT_SHARED is not offered")
        size = 4 * env.page
        with vm.create_guest_memfd(size, MMAP | INIT_SHARED) as g:
            rc, out = _touch_in_child(g, 4 * size, size, size)
            if rc != -signal.SIGBUS:
                raise Mismatch(f"the child ended with {rc}, not SIGBUS (output {out!r})")
            with g.mmap() as m:
                if m.read(0, size) != b"\xaa" * size:
                    raise Mismatch("the bytes inside the file were not kept")


@check(
    "mmap.private_sigbus",
    "with MMAP but without INIT_SHARED the memory is private: touching the mapping raises SIGBUS",
    f"{SELFTEST}: test_fault_private; {API}: GUEST_MEMFD_FLAG_INIT_SHARED",
)
def _mmap_private(env: Env) -> None:
    with env.vm() as vm:
        if not env.offered_flags(vm) & MMAP:
            raise Skip("GUEST_MEMFD_FLAG_MMAP is not offered")
        with vm.create_guest_memfd(4 * env.page, MMAP) as g:
            rc, out = _touch_in_child(g, 4 * env.page, 0, 0)
            if rc != -signal.SIGBUS:
                raise Mismatch(f"the child ended with {rc}, not SIGBUS (output {out!r})")


# -- fallocate -------------------------------------------------------------------------------------


@check(
    "fallocate.ranges",
    "allocation (KEEP_SIZE) inside the file succeeds and at or past its end fails; PUNCH_HOLE "
    "at or past the end succeeds; an unaligned offset or length fails; a punched page can be "
    "allocated again",
    f"{SELFTEST}: test_fallocate",
)
def _fallocate_ranges(env: Env) -> None:
    p, keep, punch = env.page, abi.FALLOC_FL_KEEP_SIZE, abi.FALLOC_FL_PUNCH_HOLE
    from qmpgmem.engines.kvm import sys as ksys

    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            total = 4 * p
            with vm.create_guest_memfd(total, flags) as g:
                fd = g.fd

                def fa(mode: int, off: int, length: int, fd: int = fd) -> Callable[[], None]:
                    return lambda: ksys.fallocate(fd, mode, off, length)

                tag = f"(flags {flags:#x})"
                expect_ok(f"allocate all {tag}", fa(keep, 0, total))
                expect_errno(f"punch at unaligned offset {tag}", fa(keep | punch, p - 1, p))
                expect_errno(f"allocate at the end {tag}", fa(keep, total, p))
                expect_errno(f"allocate past the end {tag}", fa(keep, total + p, p))
                expect_ok(f"punch at the end {tag}", fa(keep | punch, total, p))
                expect_ok(f"punch past the end {tag}", fa(keep | punch, total + p, p))
                expect_errno(f"punch with unaligned length {tag}", fa(keep | punch, p, p - 1))
                expect_ok(f"punch one page {tag}", fa(keep | punch, p, p))
                expect_ok(f"allocate the punched page {tag}", fa(keep, p, p))


@check(
    "fallocate.invalid_punch",
    "PUNCH_HOLE with an offset or length that is not page aligned fails with EINVAL",
    f"{SELFTEST}: test_invalid_punch_hole",
)
def _invalid_punch(env: Env) -> None:
    p = env.page
    cases = [(0, 1), (0, p - 1), (0, p + 1), (1, 1), (1, p - 1), (1, p), (1, p + 1)]
    cases += [(p, 1), (p, p - 1), (p, p + 1)]
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            with vm.create_guest_memfd(4 * p, flags) as g:
                for off, length in cases:
                    expect_errno(
                        f"punch {off:#x}+{length:#x} (flags {flags:#x})",
                        partial(g.punch_hole, off, length),
                        errno.EINVAL,
                    )


@check(
    "fallocate.modes",
    "fallocate without FALLOC_FL_KEEP_SIZE, or with any mode bit other than KEEP_SIZE and "
    "PUNCH_HOLE, fails with EOPNOTSUPP (a guest_memfd cannot grow)",
    f"{GMEM_C}: kvm_gmem_fallocate",
)
def _fallocate_modes(env: Env) -> None:
    from qmpgmem.engines.kvm import sys as ksys

    zero_range = 0x10  # FALLOC_FL_ZERO_RANGE
    with env.vm() as vm, vm.create_guest_memfd(4 * env.page) as g:
        expect_errno("mode 0", lambda: ksys.fallocate(g.fd, 0, 0, env.page), errno.EOPNOTSUPP)
        expect_errno(
            "ZERO_RANGE|KEEP_SIZE",
            lambda: ksys.fallocate(g.fd, zero_range | abi.FALLOC_FL_KEEP_SIZE, 0, env.page),
            errno.EOPNOTSUPP,
        )


# -- KVM_SET_USER_MEMORY_REGION2 with KVM_MEM_GUEST_MEMFD ------------------------------------------

REGION_GPA: Final = 0xC0000000  # set_memory_region_test.c: MEM_REGION_GPA
SLOT: Final = 10


def _gmem_vm(env: Env) -> contextlib.AbstractContextManager[Vm]:
    return env.vm()


def _bind(
    vm: Vm, slot: int, gpa: int, size: int, fd: int, offset: int = 0, flags: int = GMEM
) -> None:
    vm.set_user_memory_region2(slot, gpa, size, 0, flags, fd, offset)


@check(
    "bind.not_a_guest_memfd",
    "binding a memslot to an fd that is not a guest_memfd (the /dev/kvm fd, the VM fd, a "
    "memfd) fails with EINVAL",
    f"{SLOTTEST}: test_add_private_memory_region",
)
def _bind_wrong_fd(env: Env) -> None:
    with env.vm() as vm:
        env.offered_flags(vm)
        size = env.page
        memfd = os.memfd_create("qmpgmem-contract", os.MFD_CLOEXEC)
        try:
            os.ftruncate(memfd, size)
            for what, fd in (("the KVM fd", env.kvm.fd), ("the VM fd", vm.fd), ("a memfd", memfd)):
                expect_errno(
                    what,
                    partial(_bind, vm, SLOT, REGION_GPA, size, fd),
                    errno.EINVAL,
                )
        finally:
            os.close(memfd)


@check(
    "bind.other_vm",
    "a guest_memfd of one VM cannot back a memslot of another (EINVAL); its own VM can bind it",
    f"{SLOTTEST}: test_add_private_memory_region",
)
def _bind_other_vm(env: Env) -> None:
    with env.vm() as vm, env.vm() as vm2:
        env.offered_flags(vm)
        with vm2.create_guest_memfd(env.page) as g:
            expect_errno(
                "binding another VM's file",
                lambda: _bind(vm, SLOT, REGION_GPA, env.page, g.fd),
                errno.EINVAL,
            )
            expect_ok("binding to its own VM", lambda: _bind(vm2, SLOT, REGION_GPA, env.page, g.fd))


@check(
    "bind.offset_alignment",
    "a guest_memfd_offset that is not page aligned fails with EINVAL",
    f"{SLOTTEST}: test_add_private_memory_region",
)
def _bind_unaligned(env: Env) -> None:
    with env.vm() as vm:
        env.offered_flags(vm)
        with vm.create_guest_memfd(4 * env.page) as g:
            for off in range(1, env.page):
                expect_errno(
                    f"offset {off:#x}",
                    partial(_bind, vm, SLOT, REGION_GPA, env.page, g.fd, off),
                    errno.EINVAL,
                )
            expect_ok("offset 0", lambda: _bind(vm, SLOT, REGION_GPA, env.page, g.fd))


@check(
    "bind.past_end",
    "a binding that reaches past the end of the file (offset at or after the end, or offset + "
    "size beyond it) fails with EINVAL",
    f"{GMEM_C}: kvm_gmem_bind; {API}: KVM_SET_USER_MEMORY_REGION2 (bounds checks)",
)
def _bind_past_end(env: Env) -> None:
    p = env.page
    with env.vm() as vm:
        env.offered_flags(vm)
        with vm.create_guest_memfd(4 * p) as g:
            expect_errno(
                "offset at the end",
                lambda: _bind(vm, SLOT, REGION_GPA, p, g.fd, 4 * p),
                errno.EINVAL,
            )
            expect_errno(
                "offset past the end",
                lambda: _bind(vm, SLOT, REGION_GPA, p, g.fd, 8 * p),
                errno.EINVAL,
            )
            expect_errno(
                "size past the end",
                lambda: _bind(vm, SLOT, REGION_GPA, 8 * p, g.fd, 0),
                errno.EINVAL,
            )
            expect_errno(
                "last page + 1",
                lambda: _bind(vm, SLOT, REGION_GPA, 2 * p, g.fd, 3 * p),
                errno.EINVAL,
            )
            expect_ok("the last page", lambda: _bind(vm, SLOT, REGION_GPA, p, g.fd, 3 * p))


@check(
    "bind.gpa_overlap",
    "a guest_memfd memslot whose GPA range overlaps another memslot fails with EEXIST (front "
    "or back half); a deleted slot's range can be bound again",
    f"{SLOTTEST}: test_add_overlapping_private_memory_regions",
)
def _bind_gpa_overlap(env: Env) -> None:
    size = env.page  # MEM_REGION_SIZE
    with env.vm() as vm:
        env.offered_flags(vm)
        with vm.create_guest_memfd(size * 4) as g:
            fd = g.fd
            expect_ok("first slot", lambda: _bind(vm, SLOT, REGION_GPA, size * 2, fd, 0))
            expect_ok(
                "second slot", lambda: _bind(vm, SLOT + 1, REGION_GPA * 2, size * 2, fd, size * 2)
            )
            expect_ok("deleting the first slot", lambda: _bind(vm, SLOT, REGION_GPA, 0, 0, 0))
            expect_errno(
                "overlapping the front half of the second slot",
                lambda: _bind(vm, SLOT, REGION_GPA * 2 - size, size * 2, fd, 0),
                errno.EEXIST,
            )
            expect_errno(
                "overlapping the back half of the second slot",
                lambda: _bind(vm, SLOT, REGION_GPA * 2 + size, size * 2, fd, 0),
                errno.EEXIST,
            )
            expect_ok(
                "binding the deleted slot again",
                lambda: _bind(vm, SLOT, REGION_GPA, size * 2, fd, 0),
            )


@check(
    "bind.same_range_twice",
    "a range of the file that a memslot already binds cannot back a second memslot, even at a "
    "free GPA (EEXIST); once the first slot is deleted it can",
    f"{API}: KVM_SET_USER_MEMORY_REGION2 (the target range must not be bound to any other "
    f"memory region); {GMEM_C}: kvm_gmem_bind (an occupied range is -EEXIST since Linux 7.2, "
    'merge 06ba195f136a "KVM guest_memfd changes for 7.2"; 6.8-7.1 returned it through '
    f"the common -EINVAL exit); {SLOTTEST}: test_add_overlapping_private_memory_regions (since "
    "7.2 also overlap in the file offsets only, not in the GPA space, must fail with EEXIST)",
    deviations={"kvm_pvm": PVM_BIND_TWICE},
)
def _bind_twice(env: Env) -> None:
    size = env.page
    with env.vm() as vm:
        env.offered_flags(vm)
        with vm.create_guest_memfd(size * 4) as g:
            fd = g.fd
            expect_ok("first slot", lambda: _bind(vm, SLOT, REGION_GPA, size * 2, fd, 0))
            expect_errno(
                "the same range at another GPA",
                lambda: _bind(vm, SLOT + 1, REGION_GPA * 2, size * 2, fd, 0),
                errno.EEXIST,
            )
            expect_errno(
                "a range overlapping its second page",
                lambda: _bind(vm, SLOT + 1, REGION_GPA * 2, size * 2, fd, size),
                errno.EEXIST,
            )
            expect_ok(
                "the adjacent range",
                lambda: _bind(vm, SLOT + 1, REGION_GPA * 2, size * 2, fd, size * 2),
            )
            expect_ok("deleting the first slot", lambda: _bind(vm, SLOT, REGION_GPA, 0, 0, 0))
            expect_ok(
                "the freed range elsewhere",
                lambda: _bind(vm, SLOT + 2, REGION_GPA * 3, size * 2, fd, 0),
            )


@check(
    "bind.flags",
    "KVM_MEM_GUEST_MEMFD cannot be combined with KVM_MEM_READONLY or KVM_MEM_LOG_DIRTY_PAGES "
    "(EINVAL)",
    "virt/kvm/kvm_main.c: check_memory_region_flags",
)
def _bind_flags(env: Env) -> None:
    with env.vm() as vm:
        env.offered_flags(vm)
        with vm.create_guest_memfd(env.page) as g:
            for name, extra in (
                ("READONLY", abi.KVM_MEM_READONLY),
                ("LOG_DIRTY_PAGES", abi.KVM_MEM_LOG_DIRTY_PAGES),
            ):
                expect_errno(
                    f"GUEST_MEMFD|{name}",
                    partial(_bind, vm, SLOT, REGION_GPA, env.page, g.fd, 0, GMEM | extra),
                    errno.EINVAL,
                )


# -- lifetime --------------------------------------------------------------------------------------


@check(
    "lifetime.vm_closed_first",
    "a guest_memfd keeps its VM alive: after the VM fd is closed the file still allocates, "
    "punches holes and (with MMAP|INIT_SHARED) maps read/write",
    f"{API}: KVM_CREATE_GUEST_MEMFD (the file is bound to its VM); {GMEM_C}: kvm_gmem_create "
    "takes a VM reference",
)
def _vm_closed_first(env: Env) -> None:
    with env.vm() as vm:
        offered = env.offered_flags(vm)
        flags = MMAP | INIT_SHARED if offered & (MMAP | INIT_SHARED) == MMAP | INIT_SHARED else 0
        g = vm.create_guest_memfd(4 * env.page, flags)
    with g:
        expect_ok("allocate", lambda: g.allocate(0, 4 * env.page))
        expect_ok("punch", lambda: g.punch_hole(0, env.page))
        if flags:
            with g.mmap() as m:
                m.write(0, b"\x5a" * env.page)
                if m.read(0, env.page) != b"\x5a" * env.page:
                    raise Mismatch("the mapping did not keep what was written")


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


class _Guest:
    """One vCPU whose data page is a guest_memfd slot; ``native`` picks 64-bit CPL3 code
    (executed by the CPU) over real-mode code (emulated on kvm_pvm)."""

    def __init__(
        self, env: Env, vm: Vm, gmem: GuestMemfd, userspace_addr: int, native: bool = True
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
                        f"KVM_RUN failed with {_name(exc.errno or 0)}, KVM_EXIT_MEMORY_FAULT "
                        f"gpa {mf.gpa:#x} size {mf.size:#x} flags {mf.flags:#x}"
                    ) from None
                raise Mismatch(f"KVM_RUN failed with {_name(exc.errno or 0)}") from None
            if reason == abi.Exit.IO and run.io.direction == abi.KVM_EXIT_IO_OUT:
                value = ctypes.c_uint8.from_address(self.vcpu.run_addr + run.io.data_offset)
                return run.io.port, value.value
            if reason == abi.Exit.MMIO:
                raise Mismatch(
                    f"the guest's access exited with KVM_EXIT_MMIO at GPA {run.mmio.phys_addr:#x}"
                )
            raise Mismatch(f"unexpected exit {_exit_name(reason)}")
        raise Mismatch("the guest did not reach its next port write")

    def close(self) -> None:
        self.ram.close()


def _exit_name(reason: int) -> str:
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
            guest = _Guest(env, vm, g, 0, native)
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
            guest = _Guest(env, vm, g, m.addr)
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
            guest = _Guest(env, vm, g, 0)
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
            raise Mismatch(f"the store gave {_exit_name(reason)}, not an MMIO write at 0x200000")
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
            raise Mismatch(f"unexpected exit {_exit_name(reason)}")
        raise Mismatch("the guest did not reach protected mode")


# -- VM types, capabilities and memory attributes --------------------------------------------------


@check(
    "caps.default_vm_gmem_flags",
    "where KVM_CAP_GUEST_MEMFD_FLAGS is reported, a default VM supports MMAP and INIT_SHARED",
    f"{SELFTEST}: test_guest_memfd_guest",
)
def _default_vm_flags(env: Env) -> None:
    if not env.kvm.check_extension(abi.Cap.GUEST_MEMFD_FLAGS):
        raise Skip("KVM_CAP_GUEST_MEMFD_FLAGS is 0 on /dev/kvm")
    with env.vm() as vm:
        flags = vm.check_extension(abi.Cap.GUEST_MEMFD_FLAGS)
        if flags & (MMAP | INIT_SHARED) != MMAP | INIT_SHARED:
            raise Mismatch(f"the default VM offers flags {flags:#x}")


def _create_and_close(kvm: Kvm, vm_type: int) -> None:
    kvm.create_vm(vm_type).close()


@check(
    "vm_types.create",
    "KVM_CREATE_VM accepts every type KVM_CAP_VM_TYPES lists and refuses the others with EINVAL",
    f"{API}: KVM_CREATE_VM, KVM_CAP_VM_TYPES",
)
def _vm_types(env: Env) -> None:
    offered = env.kvm.check_extension(abi.Cap.VM_TYPES) or 1
    for vm_type in range(8):
        if offered & (1 << vm_type):
            expect_ok(f"type {vm_type}", partial(_create_and_close, env.kvm, vm_type))
        else:
            expect_errno(
                f"type {vm_type}", partial(_create_and_close, env.kvm, vm_type), errno.EINVAL
            )


@check(
    "attributes.private_unsupported",
    "on a VM whose KVM_CAP_MEMORY_ATTRIBUTES lacks PRIVATE, KVM_SET_MEMORY_ATTRIBUTES with "
    "PRIVATE is refused (EINVAL; ENOTTY where the kernel has no memory attributes at all)",
    f"{API}: KVM_SET_MEMORY_ATTRIBUTES",
)
def _attributes_unsupported(env: Env) -> None:
    with env.vm() as vm:
        if vm.check_extension(abi.Cap.MEMORY_ATTRIBUTES) & abi.KVM_MEMORY_ATTRIBUTE_PRIVATE:
            raise Skip("the default VM supports the PRIVATE attribute here")
        expect_errno(
            "PRIVATE on a default VM",
            lambda: vm.set_memory_attributes(0, env.page, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE),
            errno.EINVAL,
            errno.ENOTTY,
        )


def _private_vm_type(env: Env) -> int:
    offered = env.kvm.check_extension(abi.Cap.VM_TYPES)
    for vm_type in (abi.VmType.SW_PROTECTED, abi.VmType.DEFAULT):
        if vm_type and not offered & (1 << vm_type):
            continue
        with env.vm(vm_type) as vm:
            if vm.check_extension(abi.Cap.MEMORY_ATTRIBUTES) & abi.KVM_MEMORY_ATTRIBUTE_PRIVATE:
                return int(vm_type)
    raise Skip(
        f"no VM type this engine can create offers KVM_MEMORY_ATTRIBUTE_PRIVATE "
        f"(KVM_CAP_VM_TYPES={offered:#x})"
    )


@check(
    "attributes.private_roundtrip",
    "on a VM with private memory, page-aligned ranges switch to PRIVATE and back; an "
    "unaligned range, an unknown attribute bit or non-zero flags fail with EINVAL",
    f"{API}: KVM_SET_MEMORY_ATTRIBUTES",
)
def _attributes_roundtrip(env: Env) -> None:
    vm_type = _private_vm_type(env)
    p, private = env.page, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE
    with env.vm(vm_type) as vm:
        expect_ok("to private", lambda: vm.set_memory_attributes(REGION_GPA, 4 * p, private))
        expect_ok("back to shared", lambda: vm.set_memory_attributes(REGION_GPA, 4 * p, 0))
        expect_errno(
            "unaligned address",
            lambda: vm.set_memory_attributes(REGION_GPA + 1, p, private),
            errno.EINVAL,
        )
        expect_errno(
            "unaligned size",
            lambda: vm.set_memory_attributes(REGION_GPA, p - 1, private),
            errno.EINVAL,
        )
        expect_errno(
            "unknown attribute", lambda: vm.set_memory_attributes(REGION_GPA, p, 1), errno.EINVAL
        )
        expect_errno(
            "non-zero flags",
            lambda: vm.set_memory_attributes(REGION_GPA, p, private, 1),
            errno.EINVAL,
        )


# -- running ---------------------------------------------------------------------------------------


def run_checks(names: list[str] | None = None, backend: str | None = None) -> list[CheckResult]:
    """Run the named checks (all by default) against /dev/kvm."""
    from qmpgmem.host.cpu import cpu_kind

    chosen = [c for c in CHECKS if names is None or c.name in names]
    with Kvm() as kvm:
        env = Env(kvm, backend or kvm_backend(), cpu_emulated=cpu_kind().emulated)
        return [c.run(env) for c in chosen]


def main() -> int:
    results = run_checks(_sys.argv[1:] or None)
    for result in results:
        print(result)
    return 1 if any(r.outcome is Outcome.FAILED for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
