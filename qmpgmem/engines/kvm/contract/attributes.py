"""Memory attributes (KVM_SET_MEMORY_ATTRIBUTES): the PRIVATE attribute on the VM types that
offer it, its refusal on the others.

Mirrors api.rst KVM_SET_MEMORY_ATTRIBUTES and kvm_main.c: kvm_vm_ioctl_set_mem_attributes;
x86/private_mem_kvm_exits_test.c (the KVM_EXIT_MEMORY_FAULT of a private access KVM cannot
back); the KVM_CAP_EXIT_HYPERCALL opt-in that private_mem_conversions_test.c enables.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable
from functools import partial
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.contract.binding import REGION_GPA
from qmpgmem.engines.kvm.contract.core import (
    API,
    KVM_MAIN,
    Env,
    Mismatch,
    Skip,
    check,
    errno_name,
    expect_errno,
    expect_ok,
    run_with_deadline,
    vm_type_name,
)
from qmpgmem.engines.kvm.contract.guest import Guest, exit_name
from qmpgmem.engines.kvm.objects import Mapping, Vm

PRIVATE: Final = abi.KVM_MEMORY_ATTRIBUTE_PRIVATE
EXITS_TEST: Final = "tools/testing/selftests/kvm/x86/private_mem_kvm_exits_test.c"
CONVERSIONS_TEST: Final = "tools/testing/selftests/kvm/x86/private_mem_conversions_test.c"


def _has_private(vm: Vm) -> bool:
    return bool(vm.check_extension(abi.Cap.MEMORY_ATTRIBUTES) & PRIVATE)


def _private_vm(env: Env, vm: Vm) -> None:
    if not _has_private(vm):
        raise Skip(
            f"a {vm_type_name(vm.vm_type)} VM does not offer KVM_MEMORY_ATTRIBUTE_PRIVATE "
            f"(KVM_CAP_VM_TYPES={env.kvm.check_extension(abi.Cap.VM_TYPES):#x})"
        )


@check(
    "attributes.private_unsupported",
    "on a VM whose KVM_CAP_MEMORY_ATTRIBUTES lacks PRIVATE, KVM_SET_MEMORY_ATTRIBUTES with "
    "PRIVATE is refused (EINVAL; ENOTTY where the kernel has no memory attributes at all)",
    f"{API}: KVM_SET_MEMORY_ATTRIBUTES; {KVM_MAIN}: kvm_vm_ioctl_set_mem_attributes "
    "(attributes & ~kvm_supported_mem_attributes: -EINVAL)",
    per_vm_type=True,
)
def _attributes_unsupported(env: Env) -> None:
    with env.vm() as vm:
        if _has_private(vm):
            raise Skip(f"a {vm_type_name(vm.vm_type)} VM supports the PRIVATE attribute")
        expect_errno(
            "PRIVATE",
            lambda: vm.set_memory_attributes(0, env.page, PRIVATE),
            errno.EINVAL,
            errno.ENOTTY,
        )


#: KVM_SET_MEMORY_ATTRIBUTES arguments refused whatever the VM offers, in the order
#: kvm_vm_ioctl_set_mem_attributes checks them: (what, address, size in pages, flags)
BAD_RANGES: Final[list[tuple[str, int, int, int]]] = [
    ("non-zero flags", 0xC0000000, 1, 1),
    ("size 0", 0xC0000000, 0, 0),
    ("a range wrapping around 2^64", (1 << 64) - (1 << 12), 2, 0),
]


def _set_attributes(vm: Vm, gpa: int, size: int, attributes: int, flags: int = 0) -> None:
    vm.set_memory_attributes(gpa, size, attributes, flags)


@check(
    "attributes.range_checks",
    "KVM_SET_MEMORY_ATTRIBUTES with non-zero flags, size 0 or a range that wraps around 2^64 "
    "fails with EINVAL, with attributes 0 as with PRIVATE where offered; attributes 0 on an "
    "aligned range succeeds",
    f"{API}: KVM_SET_MEMORY_ATTRIBUTES (flags must be 0; page aligned); {KVM_MAIN}: "
    "kvm_vm_ioctl_set_mem_attributes",
    per_vm_type=True,
)
def _attributes_ranges(env: Env) -> None:
    with env.vm() as vm:
        try:
            vm.set_memory_attributes(0xC0000000, env.page, 0)
        except OSError as exc:
            if exc.errno == errno.ENOTTY:
                raise Skip("this kernel has no KVM_SET_MEMORY_ATTRIBUTES (ENOTTY)") from None
            why = errno_name(exc.errno or 0)
            raise Mismatch(f"attributes 0 on an aligned page failed: {why}") from None
        attribute_sets = [0, PRIVATE] if _has_private(vm) else [0]
        for attributes in attribute_sets:
            for what, gpa, pages, flags in BAD_RANGES:
                expect_errno(
                    f"{what} (attributes {attributes:#x})",
                    partial(_set_attributes, vm, gpa, pages * env.page, attributes, flags),
                    errno.EINVAL,
                )


@check(
    "attributes.private_roundtrip",
    "on a VM with private memory, page-aligned ranges switch to PRIVATE and back; an "
    "unaligned address or size, an unknown attribute bit or non-zero flags fail with EINVAL",
    f"{API}: KVM_SET_MEMORY_ATTRIBUTES; {KVM_MAIN}: kvm_vm_ioctl_set_mem_attributes",
    per_vm_type=True,
)
def _attributes_roundtrip(env: Env) -> None:
    p = env.page
    with env.vm() as vm:
        _private_vm(env, vm)
        expect_ok("to private", partial(_set_attributes, vm, REGION_GPA, 4 * p, PRIVATE))
        expect_ok("back to shared", partial(_set_attributes, vm, REGION_GPA, 4 * p, 0))
        for what, gpa, size, attributes in (
            ("unaligned address", REGION_GPA + 1, p, PRIVATE),
            ("unaligned size", REGION_GPA, p - 1, PRIVATE),
            ("unknown attribute bit 0", REGION_GPA, p, 1),
            ("unknown attribute bit 63", REGION_GPA, p, 1 << 63),
        ):
            call = partial(_set_attributes, vm, gpa, size, attributes)
            expect_errno(what, call, errno.EINVAL)


@check(
    "caps.exit_hypercall",
    "KVM_CHECK_EXTENSION(KVM_CAP_EXIT_HYPERCALL) is the bitmask 1 << KVM_HC_MAP_GPA_RANGE "
    "(0x1000); KVM_ENABLE_CAP accepts that mask and 0, refuses every other bit of args[0] and "
    "non-zero flags with EINVAL",
    f"{API}: 7.40 KVM_CAP_EXIT_HYPERCALL (the argument must be a subset of the result of "
    "KVM_CHECK_EXTENSION); arch/x86/kvm/x86.c: KVM_EXIT_HYPERCALL_VALID_MASK, "
    f"kvm_vm_ioctl_enable_cap (cap->flags: -EINVAL); {CONVERSIONS_TEST}: vm_enable_cap",
    per_vm_type=True,
)
def _exit_hypercall(env: Env) -> None:
    with env.vm() as vm:
        mask = vm.check_extension(abi.Cap.EXIT_HYPERCALL)
        if not mask:
            raise Skip("KVM_CAP_EXIT_HYPERCALL is 0 here")
        if mask != 1 << abi.KVM_HC_MAP_GPA_RANGE:
            raise Mismatch(f"KVM_CHECK_EXTENSION gives {mask:#x}, not 0x1000")
        expect_ok("enable 0x1000", partial(vm.enable_cap, abi.Cap.EXIT_HYPERCALL, mask))
        expect_ok("enable 0", partial(vm.enable_cap, abi.Cap.EXIT_HYPERCALL, 0))
        for bit in range(64):
            if 1 << bit == mask:
                continue
            expect_errno(
                f"enable bit {bit}",
                partial(vm.enable_cap, abi.Cap.EXIT_HYPERCALL, 1 << bit),
                errno.EINVAL,
            )
        expect_errno(
            "flags 1",
            partial(vm.enable_cap, abi.Cap.EXIT_HYPERCALL, mask, flags=1),
            errno.EINVAL,
        )


def _expect_private_fault(
    guest: Guest, page: int, kvm_run: Callable[[], int | None] | None = None
) -> None:
    """The guest's next access to its data page ends KVM_RUN (``kvm_run``, default one plain
    KVM_RUN) with EFAULT and a KVM_EXIT_MEMORY_FAULT with flags PRIVATE, that page's GPA and
    size."""
    run = guest.vcpu.kvm_run
    try:
        reason = (kvm_run or guest.vcpu.run)()
    except OSError as exc:
        if exc.errno != errno.EFAULT:
            raise Mismatch(
                f"KVM_RUN failed with {errno_name(exc.errno or 0)}, not EFAULT"
            ) from None
        if run.exit_reason != abi.Exit.MEMORY_FAULT:
            raise Mismatch(f"KVM_RUN: EFAULT with {exit_name(run.exit_reason)}") from None
        mf = run.memory_fault
        got = (mf.flags, mf.gpa, mf.size)
        want = (abi.KVM_MEMORY_EXIT_FLAG_PRIVATE, guest.data_gpa, page)
        if got != want:
            raise Mismatch(
                "KVM_EXIT_MEMORY_FAULT flags {:#x} gpa {:#x} size {:#x}, not "
                "flags {:#x} gpa {:#x} size {:#x}".format(*got, *want)
            ) from None
        return
    if reason is None:
        raise Mismatch("KVM_RUN did not return: no exit for the private access")
    raise Mismatch(f"the private access gave {exit_name(reason)}, not KVM_EXIT_MEMORY_FAULT")


@check(
    "attributes.memory_fault_exit",
    "a guest read of a PRIVATE page that KVM cannot back privately — its memslot has no "
    "guest_memfd, or its guest_memfd memslot was deleted — ends KVM_RUN with EFAULT and "
    "KVM_EXIT_MEMORY_FAULT: flags KVM_MEMORY_EXIT_FLAG_PRIVATE, the page's GPA, size one page "
    "(64-bit CPL3 guest; the slot is deleted before the run, not during it)",
    f"{EXITS_TEST}: test_private_access_memslot_not_private, "
    f"test_private_access_memslot_deleted; {API}: KVM_EXIT_MEMORY_FAULT; arch/x86/kvm/mmu/mmu.c: "
    "kvm_mmu_faultin_pfn_gmem, kvm_handle_noslot_fault",
    per_vm_type=True,
)
def _memory_fault_exit(env: Env) -> None:
    with env.vm() as vm:
        _private_vm(env, vm)
        with Mapping.anonymous(env.page) as data:
            guest = Guest(env, vm, None, data.addr, size=env.page)
            try:
                vm.set_memory_attributes(guest.data_gpa, env.page, PRIVATE)
                _expect_private_fault(guest, env.page)
            finally:
                guest.close()
    with env.vm() as vm, vm.create_guest_memfd(env.page) as g:
        guest = Guest(env, vm, g, 0)
        try:
            vm.set_memory_attributes(guest.data_gpa, env.page, PRIVATE)
            vm.set_user_memory_region2(1, guest.data_gpa, 0, 0)
            _expect_private_fault(guest, env.page)
        finally:
            guest.close()


#: 64-bit CPL3: read the data page once → out 0x10, then read it again and again (upstream's
#: guest_repeatedly_read), so the vCPU is inside KVM_RUN, touching the page, when the slot goes.
CODE_REPEATED_READ: Final = bytes.fromhex(
    "a0 0000200000000000 e610"  # movabs 0x200000,%al; out %al,$0x10
    "a0 0000200000000000 ebf5"  # 1: movabs 0x200000,%al; jmp 1b
)
#: How long the vCPU reads the page before another thread deletes its memslot.
DELETE_AFTER_S: Final = 0.05


@check(
    "attributes.memory_fault_slot_deleted_while_running",
    "while the vCPU is inside KVM_RUN reading a PRIVATE page of a guest_memfd memslot (it has "
    "read it once), another thread deletes the memslot: KVM_RUN ends with EFAULT and "
    "KVM_EXIT_MEMORY_FAULT, flags KVM_MEMORY_EXIT_FLAG_PRIVATE, the page's GPA, size one page",
    f"{EXITS_TEST}: test_private_access_memslot_deleted (guest_repeatedly_read, the slot "
    f"deleted from the main thread while a vCPU thread runs); {API}: KVM_EXIT_MEMORY_FAULT",
    per_vm_type=True,
)
def _memory_fault_deleted_while_running(env: Env) -> None:
    with env.vm() as vm:
        _private_vm(env, vm)
        with vm.create_guest_memfd(env.page) as g:
            guest = Guest(env, vm, g, 0, code=CODE_REPEATED_READ)
            try:
                vm.set_memory_attributes(guest.data_gpa, env.page, PRIVATE)
                if guest.next_out()[0] != 0x10:
                    raise Mismatch("the guest did not read its private page before the deletion")
                deleter = threading.Timer(
                    DELETE_AFTER_S, vm.set_user_memory_region2, (1, guest.data_gpa, 0, 0)
                )
                deleter.start()
                try:
                    _expect_private_fault(
                        guest, env.page, lambda: run_with_deadline(guest.vcpu, 5.0)
                    )
                finally:
                    deleter.cancel()
                    deleter.join()
            finally:
                guest.close()
