"""Pin the KVM ABI: struct sizes, field offsets and ioctl numbers.

The expected numbers are worked out here by hand from the header definitions (the field list
of each struct, the ``_IOW(KVMIO, nr, struct)`` line, asm-generic/ioctl.h's bit layout), not
taken from abi.py, so a field dropped from a ctypes structure shows up as a failure here.
"""

from __future__ import annotations

import ctypes

import pytest

from qmpgmem.engines.kvm import abi


def ioc(direction: int, nr: int, size: int) -> int:
    """asm-generic/ioctl.h: dir in bits 30-31, size in 16-29, type in 8-15, nr in 0-7."""
    return (direction << 30) | (size << 16) | (0xAE << 8) | nr


NONE, W, R, RW = 0, 1, 2, 3

# struct sizes from the headers' field lists (u8=1, u16=2, u32=4, u64=8)
SIZES = {
    "kvm_userspace_memory_region": 4 + 4 + 8 + 8 + 8,  # 32
    "kvm_userspace_memory_region2": 4 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 14 * 8,  # 160
    "kvm_create_guest_memfd": 8 + 8 + 6 * 8,  # 64
    "kvm_memory_attributes": 4 * 8,  # 32
    "kvm_pre_fault_memory": 3 * 8 + 5 * 8,  # 64
    "kvm_enable_cap": 4 + 4 + 4 * 8 + 64,  # 104
    "kvm_regs": 18 * 8,  # 144
    "kvm_segment": 8 + 4 + 2 + 10 * 1,  # 24
    "kvm_dtable": 8 + 2 + 3 * 2,  # 16
    "kvm_sregs": 8 * 24 + 2 * 16 + 7 * 8 + 4 * 8,  # 312
    "kvm_cpuid_entry2": 7 * 4 + 3 * 4,  # 40
    "kvm_cpuid2": 4 + 4,  # 8 (+ flexible array)
    # 8 (in) + 4+1+1+2 (out) + cr8 + apic_base + 256 union + 2 * u64 + 2048 sync regs
    "kvm_run": 8 + 8 + 8 + 8 + 256 + 8 + 8 + 2048,  # 2352
}


@pytest.mark.parametrize(("name", "size"), sorted(SIZES.items()))
def test_struct_size(name: str, size: int) -> None:
    assert ctypes.sizeof(getattr(abi, name)) == size


def test_kvm_run_offsets() -> None:
    run = abi.kvm_run
    assert run.immediate_exit.offset == 1
    assert run.exit_reason.offset == 8
    assert run.u.offset == 32  # the exit union
    assert run.kvm_valid_regs.offset == 32 + 256
    assert run.s.offset == 32 + 256 + 16
    # within the union: io.port at +2, data_offset at +8; hypercall.ret after nr + 6 args
    assert abi._kvm_run_io.port.offset == 2
    assert abi._kvm_run_io.data_offset.offset == 8
    assert abi._kvm_run_hypercall.ret.offset == 8 + 6 * 8
    assert abi._kvm_run_hypercall.flags.offset == 8 + 7 * 8
    assert abi._kvm_run_memory_fault.gpa.offset == 8


def test_region2_offsets() -> None:
    r2 = abi.kvm_userspace_memory_region2
    assert r2.userspace_addr.offset == 24
    assert r2.guest_memfd_offset.offset == 32
    assert r2.guest_memfd.offset == 40
    assert r2.pad2.offset == 48


def test_sregs_offsets() -> None:
    s = abi.kvm_sregs
    assert s.gdt.offset == 8 * 24
    assert s.cr0.offset == 8 * 24 + 32
    assert s.efer.offset == 8 * 24 + 32 + 5 * 8
    assert s.interrupt_bitmap.offset == 280


# (name in abi, direction, nr, size of the argument struct per SIZES)
IOCTLS = [
    ("KVM_GET_API_VERSION", NONE, 0x00, 0),
    ("KVM_CREATE_VM", NONE, 0x01, 0),
    ("KVM_CHECK_EXTENSION", NONE, 0x03, 0),
    ("KVM_GET_VCPU_MMAP_SIZE", NONE, 0x04, 0),
    ("KVM_GET_SUPPORTED_CPUID", RW, 0x05, SIZES["kvm_cpuid2"]),
    ("KVM_CREATE_VCPU", NONE, 0x41, 0),
    ("KVM_SET_USER_MEMORY_REGION", W, 0x46, SIZES["kvm_userspace_memory_region"]),
    ("KVM_SET_TSS_ADDR", NONE, 0x47, 0),
    ("KVM_SET_USER_MEMORY_REGION2", W, 0x49, SIZES["kvm_userspace_memory_region2"]),
    ("KVM_ENABLE_CAP", W, 0xA3, SIZES["kvm_enable_cap"]),
    ("KVM_SET_MEMORY_ATTRIBUTES", W, 0xD2, SIZES["kvm_memory_attributes"]),
    ("KVM_CREATE_GUEST_MEMFD", RW, 0xD4, SIZES["kvm_create_guest_memfd"]),
    ("KVM_PRE_FAULT_MEMORY", RW, 0xD5, SIZES["kvm_pre_fault_memory"]),
    ("KVM_RUN", NONE, 0x80, 0),
    ("KVM_GET_REGS", R, 0x81, SIZES["kvm_regs"]),
    ("KVM_SET_REGS", W, 0x82, SIZES["kvm_regs"]),
    ("KVM_GET_SREGS", R, 0x83, SIZES["kvm_sregs"]),
    ("KVM_SET_SREGS", W, 0x84, SIZES["kvm_sregs"]),
    ("KVM_SET_CPUID2", W, 0x90, SIZES["kvm_cpuid2"]),
]


@pytest.mark.parametrize(("name", "direction", "nr", "size"), IOCTLS)
def test_ioctl_number(name: str, direction: int, nr: int, size: int) -> None:
    assert getattr(abi, name) == ioc(direction, nr, size)


def test_well_known_numbers() -> None:
    """A few full numbers as other VMMs spell them, against a slip in ``ioc`` itself."""
    assert abi.KVM_RUN == 0xAE80
    assert abi.KVM_CREATE_VM == 0xAE01
    assert abi.KVM_SET_USER_MEMORY_REGION == 0x4020AE46
    assert abi.KVM_SET_USER_MEMORY_REGION2 == 0x40A0AE49
    assert abi.KVM_CREATE_GUEST_MEMFD == 0xC040AED4
    assert abi.KVM_SET_MEMORY_ATTRIBUTES == 0x4020AED2
    assert abi.KVM_GET_SREGS == 0x8138AE83
    assert abi.KVM_SET_CPUID2 == 0x4008AE90


def test_capability_and_constant_numbers() -> None:
    """include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h, kvm_para.h (Linux 6.18)."""
    assert int(abi.Cap.EXIT_HYPERCALL) == 201
    assert int(abi.Cap.USER_MEMORY2) == 231
    assert int(abi.Cap.MEMORY_FAULT_INFO) == 232
    assert int(abi.Cap.MEMORY_ATTRIBUTES) == 233
    assert int(abi.Cap.GUEST_MEMFD) == 234
    assert int(abi.Cap.VM_TYPES) == 235
    assert int(abi.Cap.PRE_FAULT_MEMORY) == 236
    assert int(abi.Cap.GUEST_MEMFD_FLAGS) == 244
    assert [t.value for t in abi.VmType] == [0, 1, 2, 3, 4, 5]
    assert abi.KVM_MEM_GUEST_MEMFD == 4 and abi.KVM_MEM_READONLY == 2
    assert abi.GUEST_MEMFD_FLAG_MMAP == 1 and abi.GUEST_MEMFD_FLAG_INIT_SHARED == 2
    assert abi.KVM_MEMORY_ATTRIBUTE_PRIVATE == 8
    assert int(abi.Exit.HYPERCALL) == 3 and int(abi.Exit.MEMORY_FAULT) == 39
    assert abi.KVM_HC_MAP_GPA_RANGE == 12


def test_ioc_rejects_oversized_argument() -> None:
    with pytest.raises(ValueError, match="_IOC_SIZEBITS"):
        abi._IOC(abi._IOC_WRITE, abi.KVMIO, 1, 1 << 14)
