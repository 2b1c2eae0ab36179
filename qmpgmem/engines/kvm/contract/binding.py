"""Binding memslots to a guest_memfd (KVM_SET_USER_MEMORY_REGION2 with KVM_MEM_GUEST_MEMFD),
and a guest_memfd's lifetime against its VM.

Mirrors set_memory_region_test.c (test_add_private_memory_region,
test_add_overlapping_private_memory_regions, test_invalid_memory_region_flags) and
guest_memfd_test.c: test_invalid_binding; where those give no errno, kvm_main.c:
kvm_set_memory_region and guest_memfd.c: kvm_gmem_bind decide it.
"""

from __future__ import annotations

import errno
import os
from functools import partial
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.contract.core import (
    API,
    GMEM,
    GMEM_C,
    INIT_SHARED,
    KVM_MAIN,
    MMAP,
    SELFTEST,
    SLOTTEST,
    Env,
    Mismatch,
    check,
    expect_errno,
    expect_ok,
    kernel_before,
)
from qmpgmem.engines.kvm.objects import Mapping, Vm

#: Measured on kvm_pvm (bind.same_range_twice): the pre-7.2 errno.
PVM_BIND_TWICE: Final = (
    "measured here (Linux 6.18, kvm_pvm): both bindings of an occupied file range fail with "
    "EINVAL, the errno upstream kvm_gmem_bind gave before Linux 7.2 (its common -EINVAL exit); "
    "the kernel under kvm_pvm has not picked up the 7.2 change to -EEXIST"
)


# -- KVM_SET_USER_MEMORY_REGION2 with KVM_MEM_GUEST_MEMFD ------------------------------------------

REGION_GPA: Final = 0xC0000000  # set_memory_region_test.c: MEM_REGION_GPA
SLOT: Final = 10


def _bind(
    vm: Vm, slot: int, gpa: int, size: int, fd: int, offset: int = 0, flags: int = GMEM
) -> None:
    vm.set_user_memory_region2(slot, gpa, size, 0, flags, fd, offset)


@check(
    "bind.not_a_guest_memfd",
    "binding a memslot to an fd that is not a guest_memfd (the /dev/kvm fd, the VM fd, a "
    "memfd) fails with EINVAL",
    f"{SLOTTEST}: test_add_private_memory_region",
    per_vm_type=True,
)
def _bind_wrong_fd(env: Env) -> None:
    with env.vm() as vm:
        env.bindable_flags(vm)
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
    per_vm_type=True,
)
def _bind_other_vm(env: Env) -> None:
    with env.vm() as vm, env.vm() as vm2:
        env.bindable_flags(vm)
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
    per_vm_type=True,
)
def _bind_unaligned(env: Env) -> None:
    with env.vm() as vm:
        env.bindable_flags(vm)
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
    "a binding that reaches past the end of the file (offset at or after the end, offset + "
    "size beyond it, an offset + size that wraps around 2^64) fails with EINVAL",
    f"{GMEM_C}: kvm_gmem_bind; {KVM_MAIN}: "
    f"kvm_set_memory_region (guest_memfd_offset wrap check); {API}: "
    "KVM_SET_USER_MEMORY_REGION2 (bounds checks)",
    per_vm_type=True,
)
def _bind_past_end(env: Env) -> None:
    p = env.page
    with env.vm() as vm:
        env.bindable_flags(vm)
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
            expect_errno(
                "offset + size wrapping around 2^64",
                lambda: _bind(vm, SLOT, REGION_GPA, 2 * p, g.fd, (1 << 64) - p),
                errno.EINVAL,
            )
            expect_ok("the last page", lambda: _bind(vm, SLOT, REGION_GPA, p, g.fd, 3 * p))


@check(
    "bind.gpa_overlap",
    "a guest_memfd memslot whose GPA range overlaps another memslot fails with EEXIST (front "
    "or back half); a deleted slot's range can be bound again",
    f"{SLOTTEST}: test_add_overlapping_private_memory_regions",
    per_vm_type=True,
)
def _bind_gpa_overlap(env: Env) -> None:
    size = env.page  # MEM_REGION_SIZE
    with env.vm() as vm:
        env.bindable_flags(vm)
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
    per_vm_type=True,
)
def _bind_twice(env: Env) -> None:
    size = env.page
    with env.vm() as vm:
        env.bindable_flags(vm)
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
    per_vm_type=True,
)
def _bind_flags(env: Env) -> None:
    with env.vm() as vm:
        env.bindable_flags(vm)
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
    per_vm_type=True,
)
def _vm_closed_first(env: Env) -> None:
    with env.vm() as vm:
        offered = env.bindable_flags(vm)
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


#: Measured on kvm_pvm's 6.18 (bind.offset_overflow), and on the lab's 6.12 if it shows there.
SIGNED_OFFSET_OVERFLOW: Final = (
    "measured on 6.18 (kvm_pvm): the binding with guest_memfd_offset ALIGN_DOWN(INT64_MAX, "
    "page) and a 4-page size succeeds. Before 7.2 kvm_gmem_bind took the offset as a signed "
    "loff_t, so offset + size wraps negative and passes the bounds check; 7.2 takes it as "
    "uoff_t and refuses it. test_invalid_binding's overflow case arrived with the fix"
)


@check(
    "bind.offset_overflow",
    "a memslot whose guest_memfd_offset is ALIGN_DOWN(INT64_MAX, page), so that offset + size "
    "overflows a signed 64-bit offset, fails with EINVAL",
    f"{SELFTEST}: test_invalid_binding; {GMEM_C}: kvm_gmem_bind (uoff_t offset; offset + size "
    "> i_size: -EINVAL)",
    deviations={kernel_before("7.2"): SIGNED_OFFSET_OVERFLOW},
    per_vm_type=True,
)
def _bind_offset_overflow(env: Env) -> None:
    p = env.page
    with env.vm() as vm:
        env.bindable_flags(vm)
        with vm.create_guest_memfd(4 * p) as g:
            expect_errno(
                "offset ALIGN_DOWN(INT64_MAX, page), slot 0 at GPA 0, the file's size",
                lambda: _bind(vm, 0, 0, 4 * p, g.fd, ((1 << 63) - 1) & ~(p - 1)),
                errno.EINVAL,
            )


def _closed_fd() -> int:
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return fd


@check(
    "bind.bad_fd",
    "a guest_memfd field that is no open file descriptor (a just-closed fd, 2^31 - 1, "
    "2^32 - 1) fails with EBADF",
    f"{GMEM_C}: kvm_gmem_bind (fget fails: -EBADF)",
    per_vm_type=True,
)
def _bind_bad_fd(env: Env) -> None:
    with env.vm() as vm:
        env.bindable_flags(vm)
        for what, fd in (
            ("a closed fd", _closed_fd()),
            ("fd 2^31 - 1", (1 << 31) - 1),
            ("fd 2^32 - 1", (1 << 32) - 1),
        ):
            expect_errno(what, partial(_bind, vm, SLOT, REGION_GPA, env.page, fd), errno.EBADF)


@check(
    "bind.memslot_flags",
    "KVM_MEM_GUEST_MEMFD on the v1 ioctl KVM_SET_USER_MEMORY_REGION fails with EINVAL, and so "
    "does every flag bit neither ioctl defines (bits 3-31, both ioctls)",
    f"{SLOTTEST}: test_invalid_memory_region_flags; {KVM_MAIN}: kvm_vm_ioctl "
    "(KVM_SET_USER_MEMORY_REGION_V1_FLAGS), check_memory_region_flags",
    per_vm_type=True,
)
def _bind_memslot_flags(env: Env) -> None:
    with env.vm() as vm, Mapping.anonymous(env.page) as mem:
        expect_errno(
            "v1 ioctl with KVM_MEM_GUEST_MEMFD",
            partial(vm.set_user_memory_region, 0, 0, env.page, mem.addr, GMEM),
            errno.EINVAL,
        )
        for bit in range(3, 32):
            expect_errno(
                f"v1 flag {1 << bit:#x}",
                partial(vm.set_user_memory_region, 0, 0, env.page, mem.addr, 1 << bit),
                errno.EINVAL,
            )
            expect_errno(
                f"v2 flag {1 << bit:#x}",
                partial(vm.set_user_memory_region2, 0, 0, env.page, mem.addr, 1 << bit),
                errno.EINVAL,
            )


@check(
    "bind.immutable",
    "a guest_memfd memslot can only be deleted: issuing it again unchanged, moving it to "
    "another GPA, dropping KVM_MEM_GUEST_MEMFD or adding KVM_MEM_LOG_DIRTY_PAGES fails with "
    "EINVAL and leaves it bound; deleting it succeeds and the same range binds again",
    f'{KVM_MAIN}: kvm_set_memory_region ("Private memslots are immutable, they can only be '
    f'deleted": KVM_MEM_GUEST_MEMFD on an existing slot is -EINVAL); {GMEM_C}: kvm_gmem_bind',
    per_vm_type=True,
)
def _bind_immutable(env: Env) -> None:
    size = 2 * env.page
    with env.vm() as vm:
        env.bindable_flags(vm)
        with Mapping.anonymous(size) as mem, vm.create_guest_memfd(size) as g:
            _expect_immutable(vm, g.fd, mem.addr, size)


def _expect_immutable(vm: Vm, fd: int, addr: int, size: int) -> None:
    def slot(gpa: int, flags: int, userspace_addr: int = 0) -> None:
        vm.set_user_memory_region2(SLOT, gpa, size, userspace_addr, flags, fd, 0)

    expect_ok("the slot", partial(slot, REGION_GPA, GMEM))
    for what, call in (
        ("issued again unchanged", partial(slot, REGION_GPA, GMEM)),
        ("moved to another GPA", partial(slot, REGION_GPA * 2, GMEM)),
        ("without KVM_MEM_GUEST_MEMFD", partial(slot, REGION_GPA, 0, addr)),
        ("with LOG_DIRTY_PAGES", partial(slot, REGION_GPA, GMEM | abi.KVM_MEM_LOG_DIRTY_PAGES)),
    ):
        expect_errno(what, call, errno.EINVAL)
    # still bound: the file range is taken (EEXIST since 7.2, see bind.same_range_twice)
    expect_errno(
        "the range in a second slot",
        partial(_bind, vm, SLOT + 1, REGION_GPA * 2, size, fd),
    )
    expect_ok("deleting it", partial(_bind, vm, SLOT, REGION_GPA, 0, 0))
    expect_ok("binding the range again", partial(slot, REGION_GPA * 2, GMEM))
