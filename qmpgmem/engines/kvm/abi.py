"""The KVM userspace ABI for x86-64: structures, ioctl numbers, capabilities, exit reasons.

Data only, no behaviour. Why a module of its own: every number here is derived once from the
kernel header's own definition — ``_IOW(KVMIO, 0x49, struct kvm_userspace_memory_region2)``
becomes ``_IOW(KVMIO, 0x49, kvm_userspace_memory_region2)`` — so a wrong struct layout shows up
as a wrong ioctl number in tests/engines/kvm/test_abi.py instead of as memory corruption.

Sources: include/uapi/linux/kvm.h, arch/x86/include/uapi/asm/kvm.h,
include/uapi/asm-generic/ioctl.h, include/uapi/linux/kvm_para.h (Linux 6.18).
"""

from __future__ import annotations

import ctypes
import enum
from typing import Final

# ---- include/uapi/asm-generic/ioctl.h ------------------------------------------------------
_IOC_NRBITS: Final = 8
_IOC_TYPEBITS: Final = 8
_IOC_SIZEBITS: Final = 14
_IOC_NRSHIFT: Final = 0
_IOC_TYPESHIFT: Final = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT: Final = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT: Final = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE: Final = 0
_IOC_WRITE: Final = 1
_IOC_READ: Final = 2

_CType = type[ctypes.Structure] | type[ctypes._SimpleCData]  # type: ignore[type-arg]


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:
    if size >= 1 << _IOC_SIZEBITS:
        raise ValueError(f"ioctl argument of {size} bytes does not fit _IOC_SIZEBITS")
    return (
        (direction << _IOC_DIRSHIFT)
        | (type_ << _IOC_TYPESHIFT)
        | (nr << _IOC_NRSHIFT)
        | (size << _IOC_SIZESHIFT)
    )


def _IO(type_: int, nr: int) -> int:
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int, nr: int, arg: _CType) -> int:
    return _IOC(_IOC_READ, type_, nr, ctypes.sizeof(arg))


def _IOW(type_: int, nr: int, arg: _CType) -> int:
    return _IOC(_IOC_WRITE, type_, nr, ctypes.sizeof(arg))


def _IOWR(type_: int, nr: int, arg: _CType) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, ctypes.sizeof(arg))


KVMIO: Final = 0xAE
KVM_API_VERSION: Final = 12

u8 = ctypes.c_uint8
u16 = ctypes.c_uint16
u32 = ctypes.c_uint32
u64 = ctypes.c_uint64
s32 = ctypes.c_int32


# ---- include/uapi/linux/kvm.h: memory ------------------------------------------------------
class kvm_userspace_memory_region(ctypes.Structure):
    """for KVM_SET_USER_MEMORY_REGION"""

    _fields_ = (
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),  # bytes
        ("userspace_addr", u64),  # start of the userspace allocated memory
    )


class kvm_userspace_memory_region2(ctypes.Structure):
    """for KVM_SET_USER_MEMORY_REGION2"""

    _fields_ = (
        ("slot", u32),
        ("flags", u32),
        ("guest_phys_addr", u64),
        ("memory_size", u64),
        ("userspace_addr", u64),
        ("guest_memfd_offset", u64),
        ("guest_memfd", u32),
        ("pad1", u32),
        ("pad2", u64 * 14),
    )


# The bit 0 ~ bit 15 of kvm_userspace_memory_region::flags are visible for userspace.
KVM_MEM_LOG_DIRTY_PAGES: Final = 1 << 0
KVM_MEM_READONLY: Final = 1 << 1
KVM_MEM_GUEST_MEMFD: Final = 1 << 2


class kvm_create_guest_memfd(ctypes.Structure):
    _fields_ = (("size", u64), ("flags", u64), ("reserved", u64 * 6))


GUEST_MEMFD_FLAG_MMAP: Final = 1 << 0
GUEST_MEMFD_FLAG_INIT_SHARED: Final = 1 << 1


class kvm_memory_attributes(ctypes.Structure):
    """for KVM_SET_MEMORY_ATTRIBUTES (available with KVM_CAP_MEMORY_ATTRIBUTES)"""

    _fields_ = (("address", u64), ("size", u64), ("attributes", u64), ("flags", u64))


KVM_MEMORY_ATTRIBUTE_PRIVATE: Final = 1 << 3


class kvm_pre_fault_memory(ctypes.Structure):
    _fields_ = (("gpa", u64), ("size", u64), ("flags", u64), ("padding", u64 * 5))


class kvm_enable_cap(ctypes.Structure):
    """for KVM_ENABLE_CAP"""

    _fields_ = (("cap", u32), ("flags", u32), ("args", u64 * 4), ("pad", u8 * 64))


# ---- arch/x86/include/uapi/asm/kvm.h: registers, CPUID ---------------------------------------
class kvm_regs(ctypes.Structure):
    """for KVM_GET_REGS and KVM_SET_REGS"""

    _fields_ = (
        ("rax", u64), ("rbx", u64), ("rcx", u64), ("rdx", u64),
        ("rsi", u64), ("rdi", u64), ("rsp", u64), ("rbp", u64),
        ("r8", u64), ("r9", u64), ("r10", u64), ("r11", u64),
        ("r12", u64), ("r13", u64), ("r14", u64), ("r15", u64),
        ("rip", u64), ("rflags", u64),
    )  # fmt: skip


class kvm_segment(ctypes.Structure):
    _fields_ = (
        ("base", u64),
        ("limit", u32),
        ("selector", u16),
        ("type", u8),
        ("present", u8),
        ("dpl", u8),
        ("db", u8),
        ("s", u8),
        ("l", u8),
        ("g", u8),
        ("avl", u8),
        ("unusable", u8),
        ("padding", u8),
    )


class kvm_dtable(ctypes.Structure):
    _fields_ = (("base", u64), ("limit", u16), ("padding", u16 * 3))


KVM_NR_INTERRUPTS: Final = 256


class kvm_sregs(ctypes.Structure):
    """for KVM_GET_SREGS and KVM_SET_SREGS"""

    _fields_ = (
        ("cs", kvm_segment), ("ds", kvm_segment), ("es", kvm_segment),
        ("fs", kvm_segment), ("gs", kvm_segment), ("ss", kvm_segment),
        ("tr", kvm_segment), ("ldt", kvm_segment),
        ("gdt", kvm_dtable), ("idt", kvm_dtable),
        ("cr0", u64), ("cr2", u64), ("cr3", u64), ("cr4", u64), ("cr8", u64),
        ("efer", u64), ("apic_base", u64),
        ("interrupt_bitmap", u64 * ((KVM_NR_INTERRUPTS + 63) // 64)),
    )  # fmt: skip


class kvm_cpuid_entry2(ctypes.Structure):
    _fields_ = (
        ("function", u32),
        ("index", u32),
        ("flags", u32),
        ("eax", u32),
        ("ebx", u32),
        ("ecx", u32),
        ("edx", u32),
        ("padding", u32 * 3),
    )


class kvm_cpuid2(ctypes.Structure):
    """for KVM_SET_CPUID2; followed in memory by ``nent`` kvm_cpuid_entry2 (a flexible array)"""

    _fields_ = (("nent", u32), ("padding", u32))


# ---- include/uapi/linux/kvm.h: struct kvm_run -------------------------------------------------
class _kvm_run_io(ctypes.Structure):
    """KVM_EXIT_IO"""

    _fields_ = (
        ("direction", u8),
        ("size", u8),  # bytes
        ("port", u16),
        ("count", u32),
        ("data_offset", u64),  # relative to kvm_run start
    )


class _kvm_run_mmio(ctypes.Structure):
    """KVM_EXIT_MMIO"""

    _fields_ = (("phys_addr", u64), ("data", u8 * 8), ("len", u32), ("is_write", u8))


class _kvm_run_hypercall(ctypes.Structure):
    """KVM_EXIT_HYPERCALL; ``flags`` shares its storage with the older ``longmode``"""

    _fields_ = (("nr", u64), ("args", u64 * 6), ("ret", u64), ("flags", u64))


class _kvm_run_internal(ctypes.Structure):
    """KVM_EXIT_INTERNAL_ERROR"""

    _fields_ = (("suberror", u32), ("ndata", u32), ("data", u64 * 16))


class _kvm_run_fail_entry(ctypes.Structure):
    """KVM_EXIT_FAIL_ENTRY"""

    _fields_ = (("hardware_entry_failure_reason", u64), ("cpu", u32))


class _kvm_run_system_event(ctypes.Structure):
    """KVM_EXIT_SYSTEM_EVENT"""

    _fields_ = (("type", u32), ("ndata", u32), ("data", u64 * 16))


class _kvm_run_memory_fault(ctypes.Structure):
    """KVM_EXIT_MEMORY_FAULT"""

    _fields_ = (("flags", u64), ("gpa", u64), ("size", u64))


class _kvm_run_exit(ctypes.Union):
    _fields_ = (
        ("fail_entry", _kvm_run_fail_entry),
        ("io", _kvm_run_io),
        ("mmio", _kvm_run_mmio),
        ("hypercall", _kvm_run_hypercall),
        ("internal", _kvm_run_internal),
        ("system_event", _kvm_run_system_event),
        ("memory_fault", _kvm_run_memory_fault),
        ("padding", ctypes.c_char * 256),  # Fix the size of the union.
    )


class kvm_run(ctypes.Structure):
    """for KVM_RUN, returned by mmap(vcpu_fd, offset=0)"""

    _anonymous_ = ("u",)
    _fields_ = (
        # in
        ("request_interrupt_window", u8),
        ("immediate_exit", u8),
        ("padding1", u8 * 6),
        # out
        ("exit_reason", u32),
        ("ready_for_interrupt_injection", u8),
        ("if_flag", u8),
        ("flags", u16),
        # in (pre_kvm_run), out (post_kvm_run)
        ("cr8", u64),
        ("apic_base", u64),
        ("u", _kvm_run_exit),
        ("kvm_valid_regs", u64),
        ("kvm_dirty_regs", u64),
        ("s", ctypes.c_char * 2048),
    )


KVM_EXIT_IO_IN: Final = 0
KVM_EXIT_IO_OUT: Final = 1
KVM_MEMORY_EXIT_FLAG_PRIVATE: Final = 1 << 3


class Exit(enum.IntEnum):
    """KVM_EXIT_* (kvm_run.exit_reason)"""

    UNKNOWN = 0
    EXCEPTION = 1
    IO = 2
    HYPERCALL = 3
    DEBUG = 4
    HLT = 5
    MMIO = 6
    IRQ_WINDOW_OPEN = 7
    SHUTDOWN = 8
    FAIL_ENTRY = 9
    INTR = 10
    SET_TPR = 11
    TPR_ACCESS = 12
    NMI = 16
    INTERNAL_ERROR = 17
    SYSTEM_EVENT = 24
    IOAPIC_EOI = 26
    X86_RDMSR = 29
    X86_WRMSR = 30
    DIRTY_RING_FULL = 31
    X86_BUS_LOCK = 33
    NOTIFY = 37
    MEMORY_FAULT = 39
    TDX = 40


class Cap(enum.IntEnum):
    """KVM_CAP_* numbers this tool asks about (KVM_CHECK_EXTENSION)."""

    IRQCHIP = 0
    HLT = 1
    USER_MEMORY = 3
    SET_TSS_ADDR = 4
    EXT_CPUID = 7
    NR_MEMSLOTS = 10
    SYNC_MMU = 16
    IMMEDIATE_EXIT = 136
    EXIT_HYPERCALL = 201
    USER_MEMORY2 = 231
    MEMORY_FAULT_INFO = 232
    MEMORY_ATTRIBUTES = 233
    GUEST_MEMFD = 234
    VM_TYPES = 235
    PRE_FAULT_MEMORY = 236
    GUEST_MEMFD_FLAGS = 244


class VmType(enum.IntEnum):
    """KVM_X86_*_VM, the argument of KVM_CREATE_VM on x86 (bit n of KVM_CAP_VM_TYPES)."""

    DEFAULT = 0
    SW_PROTECTED = 1
    SEV = 2
    SEV_ES = 3
    SNP = 4
    TDX = 5


# ---- include/uapi/linux/kvm_para.h: KVM_HC_MAP_GPA_RANGE -------------------------------------
KVM_HC_MAP_GPA_RANGE: Final = 12
KVM_MAP_GPA_RANGE_PAGE_SZ_4K: Final = 0
KVM_MAP_GPA_RANGE_PAGE_SZ_2M: Final = 1 << 0
KVM_MAP_GPA_RANGE_PAGE_SZ_1G: Final = 1 << 1
KVM_MAP_GPA_RANGE_ENCRYPTED: Final = 1 << 4
KVM_MAP_GPA_RANGE_DECRYPTED: Final = 0

# ---- ioctls on /dev/kvm ------------------------------------------------------------------------
KVM_GET_API_VERSION: Final = _IO(KVMIO, 0x00)
KVM_CREATE_VM: Final = _IO(KVMIO, 0x01)  # returns a VM fd
KVM_CHECK_EXTENSION: Final = _IO(KVMIO, 0x03)  # also a VM ioctl
KVM_GET_VCPU_MMAP_SIZE: Final = _IO(KVMIO, 0x04)  # in bytes
KVM_GET_SUPPORTED_CPUID: Final = _IOWR(KVMIO, 0x05, kvm_cpuid2)

# ---- ioctls on a VM fd -------------------------------------------------------------------------
KVM_CREATE_VCPU: Final = _IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION: Final = _IOW(KVMIO, 0x46, kvm_userspace_memory_region)
KVM_SET_TSS_ADDR: Final = _IO(KVMIO, 0x47)
KVM_SET_USER_MEMORY_REGION2: Final = _IOW(KVMIO, 0x49, kvm_userspace_memory_region2)
KVM_ENABLE_CAP: Final = _IOW(KVMIO, 0xA3, kvm_enable_cap)
KVM_SET_MEMORY_ATTRIBUTES: Final = _IOW(KVMIO, 0xD2, kvm_memory_attributes)
KVM_CREATE_GUEST_MEMFD: Final = _IOWR(KVMIO, 0xD4, kvm_create_guest_memfd)
KVM_GET_STATS_FD: Final = _IO(KVMIO, 0xCE)  # on a VM or a vCPU fd
KVM_PRE_FAULT_MEMORY: Final = _IOWR(KVMIO, 0xD5, kvm_pre_fault_memory)  # also a vCPU ioctl

# ---- ioctls on a vCPU fd -----------------------------------------------------------------------
KVM_RUN: Final = _IO(KVMIO, 0x80)
KVM_GET_REGS: Final = _IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS: Final = _IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS: Final = _IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS: Final = _IOW(KVMIO, 0x84, kvm_sregs)
KVM_SET_CPUID2: Final = _IOW(KVMIO, 0x90, kvm_cpuid2)

# ---- fallocate(2) modes (include/uapi/linux/falloc.h) ------------------------------------------
FALLOC_FL_KEEP_SIZE: Final = 0x01
FALLOC_FL_PUNCH_HOLE: Final = 0x02
