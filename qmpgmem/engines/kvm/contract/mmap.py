"""Mapping a guest_memfd into host userspace (GUEST_MEMFD_FLAG_MMAP, INIT_SHARED).

Mirrors guest_memfd_test.c: test_mmap_not_supported, test_mmap_cow, test_mmap_supported,
test_fault_overflow, test_fault_private (test_fault_sigbus); guest_memfd.c: kvm_gmem_mmap and
kvm_gmem_fault_user_mapping decide the errnos and signals. A fault that must raise SIGBUS is
taken in a child process.
"""

from __future__ import annotations

import signal
import subprocess
import sys as _sys

from qmpgmem.engines.kvm.contract.core import (
    API,
    INIT_SHARED,
    MMAP,
    SELFTEST,
    Env,
    Mismatch,
    Skip,
    check,
    expect_errno,
)
from qmpgmem.engines.kvm.objects import GuestMemfd, Mapping

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
