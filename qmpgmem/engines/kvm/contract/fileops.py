"""File operations on a guest_memfd: read, write, their positioned forms, stat and resizing.

Mirrors guest_memfd_test.c: test_file_read_write, test_file_size; api.rst
KVM_CREATE_GUEST_MEMFD ("cannot be mapped, read, or written by userspace, and cannot be
resized").
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from functools import partial
from typing import Final

from qmpgmem.engines.kvm.contract.core import (
    API,
    GMEM_C,
    SELFTEST,
    Env,
    Mismatch,
    check,
    expect_errno,
)

#: The file operations a guest_memfd refuses, with the errno the VFS gives for what
#: kvm_gmem_fops lacks: no .read/.write (fs/file_table.c: file_init_path sets FMODE_CAN_READ
#: and FMODE_CAN_WRITE only with them, so fs/read_write.c: vfs_read/vfs_write give -EINVAL),
#: no FMODE_PREAD/FMODE_PWRITE (ksys_pread64/ksys_pwrite64: -ESPIPE) and no .llseek
#: (file_init_path sets FMODE_LSEEK only with it, so vfs_llseek gives -ESPIPE).
FILE_OPS: Final[list[tuple[str, Callable[[int], object], int]]] = [
    ("read", lambda fd: os.read(fd, 64), errno.EINVAL),
    ("write", lambda fd: os.write(fd, bytes(64)), errno.EINVAL),
    ("pread", lambda fd: os.pread(fd, 64, 0), errno.ESPIPE),
    ("pwrite", lambda fd: os.pwrite(fd, bytes(64), 0), errno.ESPIPE),
    ("lseek(0, SEEK_SET)", lambda fd: os.lseek(fd, 0, os.SEEK_SET), errno.ESPIPE),
    ("lseek(0, SEEK_END)", lambda fd: os.lseek(fd, 0, os.SEEK_END), errno.ESPIPE),
]


@check(
    "file.read_write",
    "read and write fail with EINVAL; pread, pwrite and lseek with ESPIPE (for each flag set)",
    f"{SELFTEST}: test_file_read_write; {API}: KVM_CREATE_GUEST_MEMFD (cannot be read or "
    f"written by userspace); {GMEM_C}: kvm_gmem_fops (no read, write or llseek); "
    "fs/read_write.c: vfs_read, vfs_write, ksys_pread64, ksys_pwrite64, vfs_llseek; "
    "fs/file_table.c: file_init_path",
    per_vm_type=True,
)
def _file_read_write(env: Env) -> None:
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            with vm.create_guest_memfd(4 * env.page, flags) as g:
                for what, op, err in FILE_OPS:
                    expect_errno(f"{what} (flags {flags:#x})", partial(op, g.fd), err)


@check(
    "file.size",
    "fstat gives the size asked for and the page size as st_blksize; ftruncate to a larger "
    "or a smaller size, or to 0, fails with EINVAL and leaves the size (for each flag set)",
    f"{SELFTEST}: test_file_size; {API}: KVM_CREATE_GUEST_MEMFD (cannot be resized); "
    f"{GMEM_C}: kvm_gmem_setattr (-EINVAL, reached through fs/open.c: do_ftruncate)",
    per_vm_type=True,
)
def _file_size(env: Env) -> None:
    size = 4 * env.page
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            with vm.create_guest_memfd(size, flags) as g:
                st = os.fstat(g.fd)
                if st.st_size != size or st.st_blksize != env.page:
                    raise Mismatch(f"st_size {st.st_size}, st_blksize {st.st_blksize}")
                for what, length in (("grow", 2 * size), ("shrink", env.page), ("to 0", 0)):
                    expect_errno(
                        f"ftruncate {what} (flags {flags:#x})",
                        partial(os.ftruncate, g.fd, length),
                        errno.EINVAL,
                    )
                if os.fstat(g.fd).st_size != size:
                    raise Mismatch(f"the size changed to {os.fstat(g.fd).st_size}")
