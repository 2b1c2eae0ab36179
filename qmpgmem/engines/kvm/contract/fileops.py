"""File operations on a guest_memfd: read, write, their positioned forms, stat and resizing.

Mirrors guest_memfd_test.c: test_file_read_write, test_file_size; api.rst
KVM_CREATE_GUEST_MEMFD ("cannot be mapped, read, or written by userspace, and cannot be
resized").
"""

from __future__ import annotations

import os

from qmpgmem.engines.kvm.contract.core import API, SELFTEST, Env, Mismatch, check, expect_errno


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
