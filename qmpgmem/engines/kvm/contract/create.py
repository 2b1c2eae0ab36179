"""Creating guest_memfd files (KVM_CREATE_GUEST_MEMFD), the capabilities that describe them,
and the VM types they are created on.

Mirrors guest_memfd_test.c: test_guest_memfd_flags, test_create_guest_memfd_invalid_sizes,
test_create_guest_memfd_multiple, and main()'s loop over KVM_CAP_VM_TYPES; guest_memfd.c:
kvm_gmem_create decides the errnos.
"""

from __future__ import annotations

import errno
import os
from functools import partial

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.contract.core import (
    API,
    GMEM_C,
    INIT_SHARED,
    MMAP,
    SELFTEST,
    Env,
    Mismatch,
    Skip,
    check,
    expect_errno,
    expect_ok,
)
from qmpgmem.engines.kvm.objects import GuestMemfd, Kvm

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
