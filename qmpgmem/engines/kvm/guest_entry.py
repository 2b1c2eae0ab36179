"""Start the micro guest in 64-bit mode at CPL3, at its ROM's user entry, as the kernel
selftests start their guests: the state its CPL0 boot code would have built, set by the VMM.

Why: on kvm_pvm every instruction of the reset-vector path (real mode, 32-bit setup, the
64-bit CPL0 entry; ~80 in all) is emulated, which cost ~9 ms of the kvm engine's ~10 ms to
HELLO; CPL3 runs natively. A reset still goes through the reset vector (engine.py), so the
ROM's own boot path stays tested, and ``guest.boot: rom`` asks for it at the first boot too.

What the entry expects is what ``mg_entry64`` leaves before its ``iretq``
(images/microguest/setup.S; docs/guest-protocol.md, *The ROM, for an engine that builds its
own VM*): the guest's GDT at 0x16000 with TR loaded from its TSS descriptor, the TSS's RSP0,
I/O bitmap offset and terminator, the page-table entries that map the low 4 MiB and the ROM,
the IDT register (the guest fills the table itself), PAE + LME + PG, and CPL3 with IOPL 3.

:class:`RomBoot` decides, per ROM and ``guest.boot``, what of the ROM a VM maps at start and
where vCPU 0 begins. With a ROM header that names the payload's own entry the engine copies
the payload in itself and maps the ROM only when a reset needs the reset vector, one memslot
less at start (each waits for an SRCU grace period); the 0xF0000 alias only for a ROM that is
not the micro guest (whose real-mode code runs with CS base 0xffff0000).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.longmode import (
    CR0_PE,
    CR0_PG,
    CR4_PAE,
    EFER_LMA,
    EFER_LME,
    RFLAGS_FIXED,
    RFLAGS_IOPL3,
)
from qmpgmem.engines.kvm.memory import GuestMemory
from qmpgmem.engines.kvm.objects import Mapping, Vcpu
from qmpgmem.guest.rom_header import RomHeader, rom_header

# images/microguest/include/layout.h
PML4: Final = 0x10000  # the boot tables (MG_PML4 ...); CPL3 builds the identity map itself
PDPT: Final = 0x11000
PD: Final = 0x12000
GDT: Final = 0x16000
IDT: Final = 0x17000
TSS: Final = 0x18000
TSS_LIMIT: Final = 104 + 8192 + 1 - 1
KSTACK_TOP: Final = 0x20000
USTACK_TOP: Final = 0x3FF000
SEL_UDATA, SEL_UCODE64, SEL_TSS = 0x23, 0x2B, 0x30
PTE_TABLE, PTE_LARGE = 0x27, 0xE7
CR0_ET = 0x10

#: mg_gdt_template (setup.S), the TSS descriptor already busy as ``ltr`` leaves it
_GDT_ENTRIES: Final = (
    0,
    0x00CF9A000000FFFF,  # 0x08 code32, DPL0
    0x00CF92000000FFFF,  # 0x10 data, DPL0
    0x00AF9A000000FFFF,  # 0x18 code64, DPL0
    0x00CFF2000000FFFF,  # 0x20 data, DPL3
    0x00AFFA000000FFFF,  # 0x28 code64, DPL3
    TSS_LIMIT | (TSS & 0xFFFFFF) << 16 | 0x8B << 40 | (TSS >> 24 & 0xFF) << 56,  # 0x30 TSS
    0,  # its upper half (base 63:32 = 0)
)


def write_boot_tables(sys: Mapping) -> None:
    """What setup.S writes at CPL0: GDT, TSS fields, the 7 page-table entries."""
    sys.write(GDT, struct.pack(f"<{len(_GDT_ENTRIES)}Q", *_GDT_ENTRIES))
    sys.write(TSS + 4, struct.pack("<Q", KSTACK_TOP))  # RSP0
    sys.write(TSS + 102, struct.pack("<H", 104))  # I/O bitmap right after the TSS
    sys.write(TSS + 104 + 8192, b"\xff")  # the bitmap's terminator
    entries = {
        PML4: PDPT | PTE_TABLE,
        PDPT: PD | PTE_TABLE,
        PDPT + 3 * 8: PD + 3 * 4096 | PTE_TABLE,
        PD: 0 | PTE_LARGE,  # tables, stacks, payload
        PD + 8: 0x200000 | PTE_LARGE,  # the CPL3 stack and the mailbox page
        PD + 3 * 4096 + 511 * 8: 0xFFE00000 | PTE_LARGE,  # the ROM
    }
    for gpa, value in entries.items():
        sys.write(gpa, struct.pack("<Q", value))


def _segment(selector: int, *, code: bool) -> abi.kvm_segment:
    return abi.kvm_segment(
        base=0,
        limit=0xFFFFFFFF,
        selector=selector,
        type=0xB if code else 0x3,  # accessed: what a descriptor load leaves
        present=1,
        dpl=3,
        db=0 if code else 1,
        s=1,
        l=1 if code else 0,
        g=1,
    )


def enter_guest_cpl3(vcpu: Vcpu, sys: Mapping, user_entry: int) -> None:
    """Write the tables into ``sys`` (GPA 0) and put ``vcpu`` at ``user_entry``, CPL3.

    The vCPU's CPUID must be set already (KVM_SET_SREGS checks EFER.LME against it on
    kvm_intel and kvm_amd; see longmode.py).
    """
    write_boot_tables(sys)
    sregs = vcpu.get_sregs()
    sregs.cs = _segment(SEL_UCODE64, code=True)
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = _segment(SEL_UDATA, code=False)
    sregs.tr = abi.kvm_segment(base=TSS, limit=TSS_LIMIT, selector=SEL_TSS, type=11, present=1)
    sregs.ldt = abi.kvm_segment(unusable=1)
    sregs.gdt = abi.kvm_dtable(base=GDT, limit=8 * len(_GDT_ENTRIES) - 1)
    sregs.idt = abi.kvm_dtable(base=IDT, limit=256 * 16 - 1)
    sregs.cr0 = CR0_PE | CR0_PG | CR0_ET
    sregs.cr3 = PML4
    sregs.cr4 = CR4_PAE
    sregs.efer = EFER_LME | EFER_LMA
    vcpu.set_sregs(sregs)
    vcpu.set_regs(abi.kvm_regs(rip=user_entry, rsp=USTACK_TOP, rflags=RFLAGS_FIXED | RFLAGS_IOPL3))


@dataclass(frozen=True)
class RomBoot:
    """How one VM boots ``rom``; ``boot`` is the scenario's ``guest.boot`` (auto, rom)."""

    rom: bytes
    header: RomHeader | None
    #: vCPU 0 starts at CPL3 (auto, and the header names an entry), not at the reset vector
    at_cpl3: bool
    #: ... at the payload's entry, the payload copied in: the ROM waits for the first reset
    preload: bool

    @classmethod
    def of(cls, rom: bytes, boot: str) -> RomBoot:
        header = rom_header(rom)
        at_cpl3 = boot == "auto" and header is not None and bool(header.user_entry)
        preload = at_cpl3 and header is not None and bool(header.payload_entry)
        return cls(rom, header, at_cpl3, preload)

    @property
    def alias(self) -> bool:
        """QEMU's isa-bios alias at 0xF0000: for a ROM that is not the micro guest."""
        return self.header is None

    def map_rom(self, memory: GuestMemory) -> None:
        """The ROM below 4 GiB (and its alias), where the reset vector needs it."""
        memory.add_rom(self.rom, alias=self.alias)

    def enter(self, vcpu: Vcpu, sys: Mapping) -> str:
        """Put ``vcpu`` at the guest's CPL3 entry (``at_cpl3`` only); what was done."""
        assert self.header is not None and self.at_cpl3
        entry = self.header.user_entry
        if self.preload:
            sys.write(self.header.payload, self.header.payload_image(self.rom))
            entry = self.header.payload_entry
        enter_guest_cpl3(vcpu, sys, entry)
        return f"vCPU 0 enters the guest at CPL3, RIP {entry:#x}" + (
            " (payload copied, ROM mapped at the first reset)" if self.preload else ""
        )
