"""Memory attributes (KVM_SET_MEMORY_ATTRIBUTES): the PRIVATE attribute on the VM types that
offer it, its refusal on the others.

Mirrors api.rst KVM_SET_MEMORY_ATTRIBUTES and kvm_main.c: kvm_vm_ioctl_set_mem_attributes.
"""

from __future__ import annotations

import errno

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.contract.binding import REGION_GPA
from qmpgmem.engines.kvm.contract.core import API, Env, Skip, check, expect_errno, expect_ok


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
