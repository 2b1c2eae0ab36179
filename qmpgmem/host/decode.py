"""Names for the bits of the KVM capability values that are bitmasks.

Why a table per capability: ``KVM_CHECK_EXTENSION`` answers some capabilities with a bitmask
(api.rst: KVM_CAP_VM_TYPES "bit @n set means the VM type with value @n is supported";
KVM_CAP_GUEST_MEMFD_FLAGS the supported KVM_CREATE_GUEST_MEMFD flags; KVM_CAP_EXIT_HYPERCALL
"a bitmask of hypercalls that can be configured to exit to userspace"; KVM_CAP_MEMORY_ATTRIBUTES
the supported attributes). Reports, requirements and the JSON document all use the names below,
so a requirement string such as ``vm_type:sev-snp`` means the same bit everywhere. The numbers
come from :mod:`qmpgmem.engines.kvm.abi`, which derives them from the kernel headers once.

A bit the table does not know is kept as ``"bit<N>"`` rather than dropped: a newer kernel must
show up in the report, not vanish from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from qmpgmem.engines.kvm import abi

__all__ = [
    "EXIT_HYPERCALL_NAMES",
    "GMEM_FLAG_NAMES",
    "MEMORY_ATTRIBUTE_NAMES",
    "VM_TYPE_MASK_NAMES",
    "VM_TYPE_NAMES",
    "decode_bits",
    "encode_names",
    "vm_type_number",
]

#: KVM_X86_*_VM (arch/x86/include/uapi/asm/kvm.h): the KVM_CREATE_VM type -> our name.
VM_TYPE_NAMES: Final[Mapping[int, str]] = {
    abi.VmType.DEFAULT: "default",
    abi.VmType.SW_PROTECTED: "sw-protected",
    abi.VmType.SEV: "sev",
    abi.VmType.SEV_ES: "sev-es",
    abi.VmType.SNP: "sev-snp",
    abi.VmType.TDX: "tdx",
}

#: GUEST_MEMFD_FLAG_* (include/uapi/linux/kvm.h): bit value -> name.
GMEM_FLAG_NAMES: Final[Mapping[int, str]] = {
    abi.GUEST_MEMFD_FLAG_MMAP: "mmap",
    abi.GUEST_MEMFD_FLAG_INIT_SHARED: "init_shared",
}

#: KVM_HC_* numbers that KVM_CAP_EXIT_HYPERCALL can route to userspace: bit (1 << nr) -> name.
EXIT_HYPERCALL_NAMES: Final[Mapping[int, str]] = {
    1 << abi.KVM_HC_MAP_GPA_RANGE: "map_gpa_range",
}

#: KVM_MEMORY_ATTRIBUTE_* (include/uapi/linux/kvm.h): bit value -> name.
MEMORY_ATTRIBUTE_NAMES: Final[Mapping[int, str]] = {
    abi.KVM_MEMORY_ATTRIBUTE_PRIVATE: "private",
}


def decode_bits(value: int, names: Mapping[int, str]) -> list[str]:
    """Return the names of the bits set in ``value``, lowest bit first; unknown bits as bitN.

    ``names`` maps a single-bit *mask* to its name; VM types use :data:`VM_TYPE_MASK_NAMES`.
    """
    if value < 0:
        raise ValueError(f"a capability bitmask cannot be negative, got {value}")
    out: list[str] = []
    bit = 0
    while value >> bit:
        mask = 1 << bit
        if value & mask:
            out.append(names.get(mask, f"bit{bit}"))
        bit += 1
    return out


def encode_names(selected: list[str], names: Mapping[int, str]) -> int:
    """The inverse of :func:`decode_bits` (``bitN`` accepted); raises KeyError for a bad name."""
    by_name = {v: k for k, v in names.items()}
    value = 0
    for name in selected:
        if name in by_name:
            value |= by_name[name]
        elif name.startswith("bit") and name[3:].isdigit():
            value |= 1 << int(name[3:])
        else:
            raise KeyError(name)
    return value


#: VM types as single-bit masks, the form KVM_CAP_VM_TYPES reports them in.
VM_TYPE_MASK_NAMES: Final[Mapping[int, str]] = {1 << t: n for t, n in VM_TYPE_NAMES.items()}


def vm_type_number(name: str) -> int:
    """The KVM_CREATE_VM type for one of our VM type names; KeyError if unknown."""
    for number, known in VM_TYPE_NAMES.items():
        if known == name:
            return int(number)
    raise KeyError(name)
