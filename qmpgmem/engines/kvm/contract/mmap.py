"""Mapping a guest_memfd into host userspace (GUEST_MEMFD_FLAG_MMAP, INIT_SHARED).

Mirrors guest_memfd_test.c: test_mmap_not_supported, test_mmap_cow, test_mmap_supported,
test_fault_overflow, test_fault_private (test_fault_sigbus); guest_memfd.c: kvm_gmem_mmap and
kvm_gmem_fault_user_mapping decide the errnos and signals. A fault that must raise SIGBUS is
taken in a child process.
"""

from __future__ import annotations

import errno
import signal
import subprocess
import sys as _sys
from functools import partial

from qmpgmem.engines.kvm import sys as ksys
from qmpgmem.engines.kvm.contract.core import (
    API,
    GMEM_C,
    MMAP,
    SELFTEST,
    Env,
    Mismatch,
    Skip,
    check,
    expect_errno,
)
from qmpgmem.engines.kvm.objects import GuestMemfd, Mapping


@check(
    "mmap.without_flag",
    "without GUEST_MEMFD_FLAG_MMAP, mmap of a page or of the whole file fails with ENODEV",
    f"{SELFTEST}: test_mmap_not_supported; {GMEM_C}: kvm_gmem_mmap (-ENODEV)",
    per_vm_type=True,
)
def _mmap_without_flag(env: Env) -> None:
    with env.vm() as vm:
        for flags in [f for f in env.flag_sets(vm) if not f & MMAP]:
            with vm.create_guest_memfd(4 * env.page, flags) as g:
                for what, length in (("one page", env.page), ("the file", 4 * env.page)):
                    expect_errno(
                        f"mmap of {what} (flags {flags:#x})",
                        partial(Mapping.of_fd, g.fd, length),
                        errno.ENODEV,
                    )


def _private_map(fd: int, length: int) -> Mapping:
    prot = ksys.PROT_READ | ksys.PROT_WRITE
    return Mapping(ksys.mmap(length, prot, ksys.MAP_PRIVATE, fd), length)


@check(
    "mmap.private_cow",
    "a MAP_PRIVATE (copy-on-write) mapping of an MMAP guest_memfd fails with EINVAL",
    f"{SELFTEST}: test_mmap_cow; {GMEM_C}: kvm_gmem_mmap (not VM_SHARED|VM_MAYSHARE: -EINVAL)",
    per_vm_type=True,
)
def _mmap_cow(env: Env) -> None:
    with env.vm() as vm:
        sets = [f for f in env.flag_sets(vm) if f & MMAP]
        if not sets:
            raise Skip("GUEST_MEMFD_FLAG_MMAP is not offered")
        for flags in sets:
            with vm.create_guest_memfd(4 * env.page, flags) as g:
                expect_errno(
                    f"MAP_PRIVATE (flags {flags:#x})",
                    partial(_private_map, g.fd, 4 * env.page),
                    errno.EINVAL,
                )


@check(
    "mmap.shared_punch",
    "with MMAP|INIT_SHARED the file maps MAP_SHARED read/write; a punched page reads back as "
    "zeros, the others keep their bytes, and the page can be written again",
    f"{SELFTEST}: test_mmap_supported",
    per_vm_type=True,
)
def _mmap_shared(env: Env) -> None:
    with env.vm() as vm:
        flags = env.shared_flags(vm)
        size = 4 * env.page
        with vm.create_guest_memfd(size, flags) as g, g.mmap() as m:
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


#: A child maps the file (MAP_SHARED, read/write) and does one access: ``memset`` writes
#: 0xaa to [offset, offset + length), ``read`` reads the byte at offset. A fault that must
#: raise SIGBUS kills the child, not this process.
_TOUCH = r"""
import ctypes, sys
fd, length, offset, count = map(int, sys.argv[1:5])
op = sys.argv[5]
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
c = ctypes
libc.mmap.argtypes = (c.c_void_p, c.c_size_t, c.c_int, c.c_int, c.c_int, c.c_long)
addr = libc.mmap(None, length, 3, 1, fd, 0)
if addr in (None, ctypes.c_void_p(-1).value):
    sys.exit(3)
if op == "memset":
    ctypes.memset(addr + offset, 0xaa, count)
else:
    ctypes.string_at(addr + offset, 1)
sys.exit(0)
"""


def _touch_in_child(gmem: GuestMemfd, length: int, op: str, offset: int, count: int = 1) -> int:
    """The child's exit status: ``-SIGBUS`` when the access faulted."""
    proc = subprocess.run(
        [
            _sys.executable,
            "-I",
            "-S",
            "-c",
            _TOUCH,
            *map(str, (gmem.fd, length, offset, count)),
            op,
        ],
        pass_fds=(gmem.fd,),
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode


def _expect_sigbus(
    what: str, g: GuestMemfd, length: int, op: str, offset: int, count: int = 1
) -> None:
    rc = _touch_in_child(g, length, op, offset, count)
    if rc != -signal.SIGBUS:
        raise Mismatch(f"{what} ended the child with {rc}, not SIGBUS")


@check(
    "mmap.fault_beyond_size",
    "in a mapping four times the file's size, a memset across the end of the file raises "
    "SIGBUS and so do a read and a write of the first byte past the end; the bytes inside the "
    "file stay written",
    f"{SELFTEST}: test_fault_overflow (test_fault_sigbus); {GMEM_C}: "
    "kvm_gmem_fault_user_mapping (offset >= i_size: VM_FAULT_SIGBUS)",
    per_vm_type=True,
)
def _mmap_overflow(env: Env) -> None:
    with env.vm() as vm:
        flags = env.shared_flags(vm)
        size = 4 * env.page
        with vm.create_guest_memfd(size, flags) as g:
            _expect_sigbus("a memset across the end", g, 4 * size, "memset", 0, 4 * size)
            _expect_sigbus("a read past the end", g, 4 * size, "read", size)
            _expect_sigbus("a write past the end", g, 4 * size, "memset", size)
            with g.mmap() as m:
                if m.read(0, size) != b"\xaa" * size:
                    raise Mismatch("the bytes inside the file were not kept")


@check(
    "mmap.private_sigbus",
    "with MMAP but without INIT_SHARED the memory is private: a memset over the mapping, a "
    "read and a write of its first byte each raise SIGBUS",
    f"{SELFTEST}: test_fault_private (test_fault_sigbus); {API}: GUEST_MEMFD_FLAG_INIT_SHARED; "
    f"{GMEM_C}: kvm_gmem_fault_user_mapping (no INIT_SHARED: VM_FAULT_SIGBUS)",
    per_vm_type=True,
)
def _mmap_private(env: Env) -> None:
    with env.vm() as vm:
        if not env.offered_flags(vm) & MMAP:
            raise Skip("GUEST_MEMFD_FLAG_MMAP is not offered")
        size = 4 * env.page
        with vm.create_guest_memfd(size, MMAP) as g:
            _expect_sigbus("a memset", g, size, "memset", 0, size)
            _expect_sigbus("a read", g, size, "read", 0)
            _expect_sigbus("a write", g, size, "memset", 0)
