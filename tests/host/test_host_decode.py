"""Every capability bitmask decodes to the names the kernel headers give its bits.

The expected names and bit numbers are written out from the headers (arch/x86 asm/kvm.h
KVM_X86_*_VM, linux/kvm.h GUEST_MEMFD_FLAG_* and KVM_MEMORY_ATTRIBUTE_PRIVATE, kvm_para.h
KVM_HC_MAP_GPA_RANGE = 12), not taken from the tables under test.
"""

from __future__ import annotations

import pytest

from qmpgmem.host.decode import (
    EXIT_HYPERCALL_NAMES,
    GMEM_FLAG_NAMES,
    MEMORY_ATTRIBUTE_NAMES,
    VM_TYPE_MASK_NAMES,
    VM_TYPE_NAMES,
    decode_bits,
    encode_names,
    vm_type_number,
)

VM_TYPES = [
    (0x0, []),
    (0x1, ["default"]),  # this host: KVM_X86_DEFAULT_VM only
    (0x2, ["sw-protected"]),
    (0x4, ["sev"]),
    (0x8, ["sev-es"]),
    (0x10, ["sev-snp"]),
    (0x20, ["tdx"]),
    (0x1D, ["default", "sev", "sev-es", "sev-snp"]),  # an SNP host
    (0x23, ["default", "sw-protected", "tdx"]),  # a TDX host with KVM_SW_PROTECTED_VM
    (0x3F, ["default", "sw-protected", "sev", "sev-es", "sev-snp", "tdx"]),
    (0x41, ["default", "bit6"]),  # a type newer than this tool
]

GMEM_FLAGS = [
    (0, []),
    (1, ["mmap"]),
    (2, ["init_shared"]),
    (3, ["mmap", "init_shared"]),  # this host
    (4, ["bit2"]),
    (1 << 63 | 1, ["mmap", "bit63"]),
]

EXIT_HYPERCALL = [
    (0, []),
    (1 << 12, ["map_gpa_range"]),  # this host: 0x1000
    (1 << 12 | 1 << 11, ["bit11", "map_gpa_range"]),
    (1, ["bit0"]),
]

MEMORY_ATTRIBUTES = [
    (0, []),  # a default x86 VM
    (1 << 3, ["private"]),  # sw-protected, SNP, TDX VMs
    (1 << 3 | 1, ["bit0", "private"]),
]


@pytest.mark.parametrize(("value", "names"), VM_TYPES)
def test_vm_types(value: int, names: list[str]) -> None:
    assert decode_bits(value, VM_TYPE_MASK_NAMES) == names
    assert encode_names(names, VM_TYPE_MASK_NAMES) == value


@pytest.mark.parametrize(("value", "names"), GMEM_FLAGS)
def test_guest_memfd_flags(value: int, names: list[str]) -> None:
    assert decode_bits(value, GMEM_FLAG_NAMES) == names
    assert encode_names(names, GMEM_FLAG_NAMES) == value


@pytest.mark.parametrize(("value", "names"), EXIT_HYPERCALL)
def test_exit_hypercall(value: int, names: list[str]) -> None:
    assert decode_bits(value, EXIT_HYPERCALL_NAMES) == names
    assert encode_names(names, EXIT_HYPERCALL_NAMES) == value


@pytest.mark.parametrize(("value", "names"), MEMORY_ATTRIBUTES)
def test_memory_attributes(value: int, names: list[str]) -> None:
    assert decode_bits(value, MEMORY_ATTRIBUTE_NAMES) == names
    assert encode_names(names, MEMORY_ATTRIBUTE_NAMES) == value


@pytest.mark.parametrize(
    ("number", "name"),
    [(0, "default"), (1, "sw-protected"), (2, "sev"), (3, "sev-es"), (4, "sev-snp"), (5, "tdx")],
)
def test_vm_type_numbers(number: int, name: str) -> None:
    assert VM_TYPE_NAMES[number] == name
    assert vm_type_number(name) == number


def test_rejects_what_cannot_be_a_bitmask() -> None:
    with pytest.raises(ValueError, match="negative"):
        decode_bits(-1, GMEM_FLAG_NAMES)
    with pytest.raises(KeyError):
        encode_names(["no-such-flag"], GMEM_FLAG_NAMES)
    with pytest.raises(KeyError):
        vm_type_number("sev-snp2")
