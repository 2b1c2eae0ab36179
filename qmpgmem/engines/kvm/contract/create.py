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
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm import sys as ksys
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
from qmpgmem.engines.kvm.objects import PAGE_SIZE, GuestMemfd, Kvm, Mapping, Vm

# -- KVM_CREATE_GUEST_MEMFD ------------------------------------------------------------------------


@check(
    "create.flags",
    "every flag bit KVM_CAP_GUEST_MEMFD_FLAGS reports is accepted; every other bit of the "
    "64 is refused with EINVAL",
    f"{SELFTEST}: test_guest_memfd_flags; {API}: KVM_CREATE_GUEST_MEMFD",
    per_vm_type=True,
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


#: sizes KVM_CREATE_GUEST_MEMFD refuses, by why: kvm_gmem_create takes ``size`` as a signed
#: loff_t and refuses ``size <= 0 || !PAGE_ALIGNED(size)``
BAD_SIZES: Final = {
    "zero": [0],
    "not page aligned": [*range(1, PAGE_SIZE), PAGE_SIZE + 1, 2 * PAGE_SIZE - 1],
    "negative as loff_t": [1 << 63, (1 << 64) - PAGE_SIZE],
}


@check(
    "create.size",
    "a size that is 0, not a multiple of the page size (1..4095, 4097, 8191) or negative as a "
    "signed loff_t (2^63, 2^64-4096) is refused with EINVAL, for each flag set",
    f"{SELFTEST}: test_create_guest_memfd_invalid_sizes; {GMEM_C}: kvm_gmem_create "
    "(size <= 0 || !PAGE_ALIGNED(size) -> -EINVAL)",
    per_vm_type=True,
)
def _create_size(env: Env) -> None:
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            for why, sizes in BAD_SIZES.items():
                for size in sizes:
                    expect_errno(
                        f"size {size:#x} ({why}, flags {flags:#x})",
                        partial(vm.create_guest_memfd, size, flags),
                        errno.EINVAL,
                    )


def _create_raw(vm: Vm, size: int, flags: int, reserved: list[int]) -> int:
    arg = abi.kvm_create_guest_memfd(size=size, flags=flags)
    for i, value in enumerate(reserved):
        arg.reserved[i] = value
    return ksys.ioctl(vm.fd, abi.KVM_CREATE_GUEST_MEMFD, arg)


@check(
    "create.reserved_ignored",
    "kvm_create_guest_memfd.reserved[0..5] are not looked at: a creation with any of them "
    "non-zero succeeds like one with zeros (upstream does not promise this; it is what the "
    "code does — api.rst gives no rule for them and kvm_gmem_create reads only size and "
    "flags — so a kernel that starts refusing them shows here)",
    f"{GMEM_C}: kvm_gmem_create; {API}: KVM_CREATE_GUEST_MEMFD (struct kvm_create_guest_memfd)",
    per_vm_type=True,
)
def _create_reserved(env: Env) -> None:
    with env.vm() as vm:
        env.offered_flags(vm)
        for i in range(6):
            reserved = [0] * 6
            reserved[i] = 1 << 63 | 1
            fd = expect_ok(
                f"reserved[{i}] = {reserved[i]:#x}",
                partial(_create_raw, vm, env.page, 0, reserved),
            )
            assert isinstance(fd, int)
            size = os.fstat(fd).st_size
            os.close(fd)
            if size != env.page:
                raise Mismatch(f"with reserved[{i}] set the file has {size} bytes")


@check(
    "create.multiple",
    "two guest_memfds of one VM are distinct files (own inode) with the sizes asked for",
    f"{SELFTEST}: test_create_guest_memfd_multiple",
    per_vm_type=True,
)
def _create_multiple(env: Env) -> None:
    with env.vm() as vm:
        env.offered_flags(vm)
        with vm.create_guest_memfd(env.page) as a, vm.create_guest_memfd(2 * env.page) as b:
            sa, sb = os.fstat(a.fd), os.fstat(b.fd)
            if (sa.st_size, sb.st_size) != (env.page, 2 * env.page):
                raise Mismatch(f"st_size {sa.st_size} and {sb.st_size}")
            if sa.st_ino == sb.st_ino:
                raise Mismatch(f"both files have inode {sa.st_ino}")


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


@check(
    "caps.init_shared_implies_mmap",
    "a VM type whose KVM_CAP_GUEST_MEMFD_FLAGS has INIT_SHARED has MMAP too; a file created "
    "with INIT_SHARED but without MMAP is accepted (only unknown bits are refused) and cannot "
    "be mapped (ENODEV)",
    f"{SELFTEST}: test_guest_memfd (MMAP should always be supported if INIT_SHARED is "
    "supported); include/linux/kvm_host.h: kvm_gmem_get_supported_flags; "
    f"{GMEM_C}: kvm_gmem_create, kvm_gmem_mmap",
    per_vm_type=True,
)
def _init_shared_implies_mmap(env: Env) -> None:
    with env.vm() as vm:
        offered = env.offered_flags(vm)
        if not offered & INIT_SHARED:
            raise Skip(f"INIT_SHARED is not offered (KVM_CAP_GUEST_MEMFD_FLAGS={offered:#x})")
        if not offered & MMAP:
            raise Mismatch(f"KVM_CAP_GUEST_MEMFD_FLAGS is {offered:#x}: INIT_SHARED without MMAP")
        g = expect_ok("INIT_SHARED alone", partial(vm.create_guest_memfd, env.page, INIT_SHARED))
        assert isinstance(g, GuestMemfd)
        with g:
            expect_errno("mmap of it", lambda: Mapping.of_fd(g.fd, env.page), errno.ENODEV)


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
