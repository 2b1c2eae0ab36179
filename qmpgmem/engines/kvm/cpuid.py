"""The CPUID a vCPU of the kvm engine sees: what KVM supports, plus what a VMM adds.

Why not KVM_GET_SUPPORTED_CPUID unchanged: it lists what KVM *can* offer, not what a guest of
a hypervisor sees. kvm_amd on Linux 6.12 leaves leaf 1 ECX[31] (the hypervisor bit) clear,
and a guest that follows the rules reads the 0x40000000 signature leaves only when that bit
is set, so the micro guest never learned it runs on KVM and refused to convert (measured in
the lab, docs/lab.md). QEMU (target/i386/kvm) and the kernel's selftest library set the bit
and provide the "KVMKVMKVM" leaves themselves; so does this.
"""

from __future__ import annotations

import ctypes
from typing import Final

from qmpgmem.engines.kvm import abi

__all__ = ["HYPERVISOR_BIT", "KVM_SIGNATURE", "vcpu_cpuid"]

#: CPUID.1:ECX[31] — "running on a hypervisor" (reserved for that use by Intel and AMD).
HYPERVISOR_BIT: Final = 1 << 31
KVM_CPUID_SIGNATURE: Final = 0x40000000
KVM_CPUID_FEATURES: Final = 0x40000001
#: "KVMKVMKVM\0\0\0" as EBX, ECX, EDX (arch/x86/include/uapi/asm/kvm_para.h).
KVM_SIGNATURE: Final = (0x4B4D564B, 0x564B4D56, 0x0000004D)


def vcpu_cpuid(
    supported: ctypes.Array[abi.kvm_cpuid_entry2],
) -> ctypes.Array[abi.kvm_cpuid_entry2]:
    """A copy of ``supported`` with the hypervisor bit set and the KVM signature leaf present
    (0x40000000 with EAX = the highest hypervisor leaf, at least 0x40000001)."""
    entries = [_copy(e) for e in supported]
    for entry in entries:
        if entry.function == 1:
            entry.ecx |= HYPERVISOR_BIT
    signature = [e for e in entries if e.function == KVM_CPUID_SIGNATURE]
    if not signature:
        signature = [abi.kvm_cpuid_entry2(function=KVM_CPUID_SIGNATURE)]
        entries.append(signature[0])
    sig = signature[0]
    sig.ebx, sig.ecx, sig.edx = KVM_SIGNATURE
    sig.eax = max(sig.eax, KVM_CPUID_FEATURES)
    if not any(e.function == KVM_CPUID_FEATURES for e in entries):
        entries.append(abi.kvm_cpuid_entry2(function=KVM_CPUID_FEATURES))
    out = (abi.kvm_cpuid_entry2 * len(entries))()
    for i, entry in enumerate(entries):
        out[i] = entry
    return out


def _copy(entry: abi.kvm_cpuid_entry2) -> abi.kvm_cpuid_entry2:
    return abi.kvm_cpuid_entry2.from_buffer_copy(entry)
