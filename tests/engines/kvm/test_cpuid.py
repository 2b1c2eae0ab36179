"""The vCPU CPUID: the hypervisor bit and the KVM signature a VMM adds to what KVM supports."""

from __future__ import annotations

import ctypes

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.cpuid import HYPERVISOR_BIT, KVM_SIGNATURE, vcpu_cpuid
from qmpgmem.engines.kvm.objects import Kvm


def _entries(*functions: int) -> ctypes.Array[abi.kvm_cpuid_entry2]:
    arr = (abi.kvm_cpuid_entry2 * len(functions))()
    for i, fn in enumerate(functions):
        arr[i].function = fn
    return arr


def _leaf(entries: ctypes.Array[abi.kvm_cpuid_entry2], fn: int) -> abi.kvm_cpuid_entry2:
    (found,) = [e for e in entries if e.function == fn]
    return found


def test_hypervisor_bit_set_when_kvm_leaves_it_clear() -> None:
    """kvm_amd 6.12 in the lab: leaf 1 ECX[31] clear, 0x40000000 present."""
    supported = _entries(0, 1, 0x40000000, 0x40000001)
    supported[1].ecx = 0x00000201
    out = vcpu_cpuid(supported)
    assert _leaf(out, 1).ecx == 0x00000201 | HYPERVISOR_BIT
    sig = _leaf(out, 0x40000000)
    assert (sig.ebx, sig.ecx, sig.edx) == KVM_SIGNATURE
    assert sig.eax >= 0x40000001
    assert supported[1].ecx == 0x00000201, "the supported list itself is left alone"


def test_signature_leaves_added_when_absent() -> None:
    out = vcpu_cpuid(_entries(0, 1))
    assert {e.function for e in out} == {0, 1, 0x40000000, 0x40000001}
    assert _leaf(out, 0x40000000).ebx == KVM_SIGNATURE[0]


def test_signature_bytes_spell_kvmkvmkvm() -> None:
    raw = b"".join(v.to_bytes(4, "little") for v in KVM_SIGNATURE)
    assert raw == b"KVMKVMKVM\0\0\0"


def test_real_supported_cpuid_keeps_every_leaf(kvm_available: None) -> None:
    with Kvm() as kvm:
        supported = kvm.supported_cpuid()
    out = vcpu_cpuid(supported)
    assert len(out) >= len(supported)
    assert _leaf(out, 1).ecx & HYPERVISOR_BIT
