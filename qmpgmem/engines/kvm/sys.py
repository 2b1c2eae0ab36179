"""The system calls the KVM engine makes, each checked: a failure raises ``OSError(errno)``.

Why through libc and not :func:`fcntl.ioctl`: a ctypes structure is passed by reference (the
kernel writes the result in place, no 1 KiB bounce buffer), the call releases the GIL while
``KVM_RUN`` blocks, and an ``EINTR`` reaches the caller as :class:`InterruptedError` instead
of being retried — which is how a vCPU thread is kicked out of ``KVM_RUN``.
"""

from __future__ import annotations

import ctypes
import mmap as _mmap
import os
from typing import Final

_libc = ctypes.CDLL(None, use_errno=True)

_ioctl = _libc.ioctl
_ioctl.restype = ctypes.c_int
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)

_mmap_fn = _libc.mmap
_mmap_fn.restype = ctypes.c_void_p
_mmap_fn.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)

_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)

_fallocate = _libc.fallocate
_fallocate.restype = ctypes.c_int
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)

_madvise = _libc.madvise
_madvise.restype = ctypes.c_int
_madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)

MAP_FAILED: Final = ctypes.c_void_p(-1).value
PROT_READ: Final = _mmap.PROT_READ
PROT_WRITE: Final = _mmap.PROT_WRITE
MAP_SHARED: Final = _mmap.MAP_SHARED
MAP_PRIVATE: Final = _mmap.MAP_PRIVATE
MAP_ANONYMOUS: Final = _mmap.MAP_ANONYMOUS
MAP_NORESERVE: Final = 0x4000
MADV_DONTNEED: Final = 4
MADV_REMOVE: Final = 9
MADV_HUGEPAGE: Final = 14


def _raise(what: str) -> None:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def ioctl(fd: int, request: int, arg: ctypes.Structure | ctypes.Array | int = 0) -> int:  # type: ignore[type-arg]
    """ioctl(2); a structure goes by reference and is updated in place."""
    ptr: object
    ptr = arg if isinstance(arg, int) else ctypes.byref(arg)
    ret: int = _ioctl(fd, request, ptr)
    if ret < 0:
        _raise(f"ioctl {request:#x} on fd {fd}")
    return ret


def mmap(length: int, prot: int, flags: int, fd: int = -1, offset: int = 0) -> int:
    """mmap(2); returns the address."""
    addr = _mmap_fn(None, length, prot, flags, fd, offset)
    if addr is None or addr == MAP_FAILED:
        _raise(f"mmap of {length:#x} bytes from fd {fd}")
    assert addr is not None
    return int(addr)


def munmap(addr: int, length: int) -> None:
    if _munmap(addr, length) < 0:
        _raise(f"munmap {addr:#x}+{length:#x}")


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if _fallocate(fd, mode, offset, length) < 0:
        _raise(f"fallocate mode {mode:#x} [{offset:#x}, +{length:#x}) on fd {fd}")


def madvise(addr: int, length: int, advice: int) -> None:
    if _madvise(addr, length, advice) < 0:
        _raise(f"madvise {advice} on {addr:#x}+{length:#x}")


def read_at(addr: int, size: int) -> bytes:
    """Copy ``size`` bytes out of a mapping (the caller checks the bounds)."""
    return ctypes.string_at(addr, size)


def write_at(addr: int, data: bytes | bytearray | memoryview) -> None:
    """Copy ``data`` into a mapping (the caller checks the bounds)."""
    buf = bytes(data)
    ctypes.memmove(addr, buf, len(buf))
