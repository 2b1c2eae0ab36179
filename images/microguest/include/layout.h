/*
 * Guest-physical layout of the micro guest and the constants the boot code and the C code
 * share. Included from assembly (__ASSEMBLER__) and C. docs/guest-protocol.md mirrors it.
 *
 * Everything below SYS_SIZE belongs to the guest; the host's scenario regions start there.
 * 0xA0000-0xFFFFF is left alone: VGA/BIOS on pc/q35, the bios alias on microvm.
 */
#ifndef MICROGUEST_LAYOUT_H
#define MICROGUEST_LAYOUT_H

#define MG_PROTOCOL_VERSION 1
#define MG_SYS_SIZE 0x400000 /* qmpgmem.guest.protocol.SYS_SIZE */
#define MG_MEM_LIMIT 0x100000000 /* the identity map covers 0..4 GiB */

/*
 * System tables (built at boot; their previous contents do not matter). The boot tables map
 * only what the CPL0 boot code and the first CPL3 steps touch (setup.S, or the kvm engine);
 * CPL3 then writes the whole identity map into fresh pages and switches CR3 to it. Why not
 * in place: a page in use as a page table is write-protected by a shadow MMU (kvm_pvm), and
 * rewriting the 4 KiB-entry tables where they are cost ~10 ms of trapped writes there.
 */
#define MG_PML4 0x10000 /* boot tables: PML4, PDPT, four PDs (0x12000-0x15fff) */
#define MG_PDPT 0x11000
#define MG_PD 0x12000
#define MG_IDMAP_PML4 0x80000 /* the identity map: PML4, PDPT, four PDs (0x82000-0x85fff) */
#define MG_IDMAP_PDPT 0x81000
#define MG_IDMAP_PD 0x82000
#define MG_GDT 0x16000
#define MG_IDT 0x17000 /* 256 gates, 0x17000-0x17fff */
#define MG_TSS 0x18000 /* 104 bytes, then the I/O bitmap (8 KiB + 0xff), to 0x1a068 */
#define MG_TSS_LIMIT (104 + 8192 + 1 - 1)
#define MG_KSTACK_TOP 0x20000 /* CPL0 stack 0x1b000-0x1ffff (TSS.RSP0) */
#define MG_PAYLOAD 0x100000 /* code+data+bss: the PVH ELF's load address, the ROM's copy */
#define MG_PAYLOAD_MAX 0x100000 /* the payload must end below 0x200000 */
#define MG_USTACK_TOP 0x3ff000 /* CPL3 stack 0x200000-0x3fefff */
/*
 * The mailbox page (docs/guest-protocol.md, "Mailbox"): requests and replies in memory the
 * host maps (the engines give this page a backend of its own), one exit per message.
 */
#define MG_MBOX 0x3ff000

/*
 * Application processors (docs/guest-protocol.md, "Several vCPUs"). vCPU k (1..MG_MAX_CPUS-1)
 * starts at the SIPI trampoline (copied below 1 MiB by the BSP), then has its own TSS
 * (GDT selector MG_SEL_TSS + 16*k), CPL0 stack and CPL3 stack in 0x20000-0x9ffff.
 */
#define MG_MAX_CPUS 8
#define MG_AP_TRAMP 0x20000 /* SIPI vector 0x20: real mode at CS=0x2000, IP=0 */
#define MG_AP_SIPI_VECTOR (MG_AP_TRAMP >> 12)
#define MG_AP_TSS 0x21000 /* 128 bytes per vCPU: 104-byte TSS, no I/O bitmap */
#define MG_AP_KSTACK 0x30000 /* CPL0 stacks, 8 KiB each: top of vCPU k = base + (k+1)*8K */
#define MG_AP_KSTACK_SIZE 0x2000
#define MG_AP_USTACK 0x40000 /* CPL3 stacks, 32 KiB each, to 0x80000 */
#define MG_AP_USTACK_SIZE 0x8000
#define MG_AP_GDT_LIMIT (0x30 + 16 * MG_MAX_CPUS - 1) /* room for every vCPU's TSS */
#define MG_APIC_BASE 0xfee00000 /* xAPIC MMIO, reached at CPL3 through the identity map */

/* Segment selectors of the guest's GDT. */
#define MG_SEL_CODE32 0x08
#define MG_SEL_DATA 0x10
#define MG_SEL_CODE64 0x18
#define MG_SEL_UDATA 0x23 /* 0x20 | RPL 3 */
#define MG_SEL_UCODE64 0x2b /* 0x28 | RPL 3 */
#define MG_SEL_TSS 0x30
#define MG_GDT_LIMIT 0x3f

/* Page-table entry flags: present, writable, user, accessed (+ dirty, 2 MiB for leaves). */
#define MG_PTE_TABLE 0x27
#define MG_PTE_LARGE 0xe7

/*
 * The CPL3 -> CPL0 gate: `int3` (vector 3, DPL 3) with a function code in %rdi. Also
 * installed at 0x80, but `int $n` raises #UD under kvm_pvm; int3 works everywhere.
 */
#define MG_VEC_GATE 3
#define MG_VEC_GATE_ALT 0x80
#define MG_GATE_CR3 0 /* load CR3 from %rsi (flushes the TLB) */
#define MG_GATE_VMCALL 1 /* vmcall (Intel): rax = nr, rbx/rcx/rdx/rsi = args -> rax */
#define MG_GATE_VMMCALL 2 /* vmmcall (AMD, Hygon): same registers */
#define MG_GATE_IDLE 3 /* hlt until the next wake-up NMI, unless %esi != mg_wakeups */

/*
 * Waking from idle: COM1's receive interrupt (IRQ 4) is routed through the IOAPIC as an NMI,
 * which wakes `hlt` with IF=0 under QEMU (KVM, TCG) without any maskable-interrupt delivery
 * (kvm_pvm holds those back). The kvm engine has no IOAPIC: it answers the HLT exit itself.
 */
#define MG_VEC_NMI 2
#define MG_IOAPIC_BASE 0xfec00000
#define MG_COM1_GSI 4

/* Initial RFLAGS at CPL3: IOPL=3 (in/out allowed), IF=0, reserved bit 1. */
#define MG_USER_RFLAGS 0x3002

/* The ROM: 64 KiB mapped at 0xffff0000 (microvm also aliases it at 0xf0000). */
#define MG_ROM_BASE 0xffff0000
#define MG_ROM_BOOT 0xfffff000 /* ROM-resident boot code (offset 0xf000) */
#define MG_ROM_HEADER 0xffffffc0 /* struct mg_rom_header (offset 0xffc0) */
#define MG_ROM_RESET 0xfffffff0 /* reset vector (offset 0xfff0) */

#define MG_SERIAL 0x3f8
#define MG_DEBUG_EXIT 0xf4

#endif
