"""Put a vCPU straight into 64-bit mode at CPL3 (or CPL0), with identity-mapped memory.

Why CPL3: on kvm_pvm guest code at CPL0 (and real or protected mode) is emulated one
instruction at a time, while long mode at CPL3 runs natively (docs/performance.md). A check
whose guest should exercise the ordinary fault path — not the instruction emulator — runs
here. ``RFLAGS.IOPL=3`` lets ring-3 code use ``out`` to talk to the VMM.

Tables (in a RAM slot at GPA 0): GDT at 0x1000, PML4 at 0x2000, PDPT at 0x3000, one page
directory at 0x4000 mapping the first GiB with 2 MiB user pages; :func:`map_gib` adds one
more GiB (a page directory at 0x5000), e.g. the 4 GiB the upstream guest_memfd selftest puts
its slot at. CPL0 (:func:`enter_kernel_long_mode`) is for a check that mirrors an upstream
guest as written — the selftests' guests run at CPL0.

Why the vCPU needs its CPUID first: upstream KVM_SET_SREGS validates EFER against the *guest*
CPUID (arch/x86/kvm/x86.c: __kvm_valid_efer refuses EFER.LME/LMA without X86_FEATURE_LM, and
kvm_is_valid_sregs, in arch/x86/kvm/regs.c of the lab's 7.2 source, calls it), and a new
vCPU has an empty CPUID, so kvm_intel and kvm_amd answer EINVAL until KVM_SET_CPUID2 ran —
the kernel selftests always set it first (vm_arch_vcpu_add → vcpu_init_cpuid). kvm_pvm accepts
the registers without it. Pass ``cpuid`` (e.g. :func:`.cpuid.vcpu_cpuid` of
:meth:`.objects.Kvm.supported_cpuid`) to have it set here, or set it before calling.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.objects import Mapping, Vcpu

GDT_GPA: Final = 0x1000
PML4_GPA: Final = 0x2000
PDPT_GPA: Final = 0x3000
PD_GPA: Final = 0x4000
PD_EXTRA_GPA: Final = 0x5000
#: Lowest GPA free for code and data after the tables.
FREE_GPA: Final = 0x10000
#: null, kernel code, kernel data, user data, user code (selectors 0x08, 0x10, 0x1b, 0x23)
GDT: Final = (0, 0x00AF9A000000FFFF, 0x00CF92000000FFFF, 0x00CFF2000000FFFF, 0x00AFFA000000FFFF)
USER_DS: Final = 0x1B
USER_CS: Final = 0x23
KERNEL_CS: Final = 0x08
KERNEL_DS: Final = 0x10

PTE_P, PTE_W, PTE_U, PTE_PS = 1, 2, 4, 0x80
CR0_PE, CR0_PG = 1, 1 << 31
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10
RFLAGS_FIXED, RFLAGS_IOPL3 = 0x2, 0x3000


def write_tables(mem: Mapping) -> None:
    """GDT and identity page tables into ``mem`` (the RAM at GPA 0, at least 0x5000 bytes)."""
    mem.write(GDT_GPA, struct.pack(f"<{len(GDT)}Q", *GDT))
    mem.write(PML4_GPA, struct.pack("<Q", PDPT_GPA | PTE_P | PTE_W | PTE_U))
    mem.write(PDPT_GPA, struct.pack("<Q", PD_GPA | PTE_P | PTE_W | PTE_U))
    entries = [(i << 21) | PTE_P | PTE_W | PTE_U | PTE_PS for i in range(512)]
    mem.write(PD_GPA, struct.pack("<512Q", *entries))


def map_gib(mem: Mapping, gib: int) -> None:
    """Identity-map GiB number ``gib`` (1..511) with 2 MiB pages through the page directory
    at PD_EXTRA_GPA (one extra GiB per set of tables)."""
    if not 1 <= gib < 512:
        raise ValueError(f"GiB {gib} is not mapped by one PDPT")
    mem.write(PDPT_GPA + 8 * gib, struct.pack("<Q", PD_EXTRA_GPA | PTE_P | PTE_W | PTE_U))
    base = gib << 30
    entries = [(base + (i << 21)) | PTE_P | PTE_W | PTE_U | PTE_PS for i in range(512)]
    mem.write(PD_EXTRA_GPA, struct.pack("<512Q", *entries))


def _segment(selector: int, code: bool) -> abi.kvm_segment:
    return abi.kvm_segment(
        base=0,
        limit=0xFFFFFFFF,
        selector=selector,
        type=0xB if code else 0x3,  # execute/read accessed, read/write accessed
        present=1,
        dpl=selector & 3,
        db=0 if code else 1,
        s=1,
        l=1 if code else 0,
        g=1,
    )


def enter_user_long_mode(
    vcpu: Vcpu,
    rip: int,
    rsp: int,
    cpuid: ctypes.Array[abi.kvm_cpuid_entry2] | None = None,
    **regs: int,
) -> None:
    """Registers for 64-bit CPL3 code at ``rip`` (tables from :func:`write_tables`), general
    registers from ``regs``; with ``cpuid``, KVM_SET_CPUID2 first (see the module docstring
    for why it must come first)."""
    _enter_long_mode(vcpu, rip, rsp, USER_CS, USER_DS, RFLAGS_FIXED | RFLAGS_IOPL3, cpuid, regs)


def enter_kernel_long_mode(
    vcpu: Vcpu,
    rip: int,
    rsp: int,
    cpuid: ctypes.Array[abi.kvm_cpuid_entry2] | None = None,
    **regs: int,
) -> None:
    """Registers for 64-bit CPL0 code at ``rip``, with general registers from ``regs``
    (``rdi=…, rsi=…``: a function's arguments, as the selftests' vcpu_args_set)."""
    _enter_long_mode(vcpu, rip, rsp, KERNEL_CS, KERNEL_DS, RFLAGS_FIXED, cpuid, regs)


def _enter_long_mode(
    vcpu: Vcpu,
    rip: int,
    rsp: int,
    cs: int,
    ds: int,
    rflags: int,
    cpuid: ctypes.Array[abi.kvm_cpuid_entry2] | None,
    regs: dict[str, int] | None = None,
) -> None:
    if cpuid is not None:
        vcpu.set_cpuid(cpuid)
    sregs = vcpu.get_sregs()
    sregs.cs = _segment(cs, code=True)
    data = _segment(ds, code=False)
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data
    sregs.tr = abi.kvm_segment(limit=0x67, type=11, present=1)
    sregs.gdt = abi.kvm_dtable(base=GDT_GPA, limit=8 * len(GDT) - 1)
    sregs.idt = abi.kvm_dtable(base=0, limit=0)
    sregs.cr0 = CR0_PE | CR0_PG | 0x10  # ET
    sregs.cr3 = PML4_GPA
    sregs.cr4 = CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA
    vcpu.set_sregs(sregs)
    vcpu.set_regs(abi.kvm_regs(rip=rip, rsp=rsp, rflags=rflags, **(regs or {})))
