/*
 * The one CPL0 path both boot routes share: 32-bit protected mode (paging off) -> long mode
 * -> iretq to CPL3. On kvm_pvm every instruction here is emulated (~200x slower than TCG),
 * so it does the least that lets CPL3 code run: a GDT and TSS, the page-table entries that
 * map the code, tables and stacks, and the mode switches. user.c finishes the page tables
 * and the IDT at CPL3 and asks for one CR3 reload through the gate (entry.S).
 *
 * Entry: mg_entry32, CS = flat 32-bit code, DS/ES flat (PVH guarantees this; the ROM's
 * real-mode stub sets it up), interrupts off. Nothing else is assumed.
 */
#include "layout.h"

    .section .boot, "ax"
    .code32
    .globl mg_entry32
mg_entry32:
    cli
    cld
    /* Our GDT in RAM (ltr writes the busy bit into it, so not the ROM template). */
    mov $gdt_template, %esi
    mov $MG_GDT, %edi
    mov $(gdt_template_end - gdt_template) / 4, %ecx
    rep movsl
    lgdt gdt_desc
    ljmp $MG_SEL_CODE32, $1f
1:  mov $MG_SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs
    mov $MG_KSTACK_TOP, %esp

    /*
     * TSS: RSP0 for events taken at CPL3, and an I/O bitmap right after it (cpu.c clears it
     * at CPL3). IOPL=3 alone would do on hardware and TCG, but kvm_pvm drops IOPL on the
     * first return from CPL0 and then checks the bitmap.
     */
    movl $MG_KSTACK_TOP, MG_TSS + 4
    movl $0, MG_TSS + 8
    movw $104, MG_TSS + 102
    movb $0xff, MG_TSS + 104 + 8192

    /*
     * Only the entries the next steps touch: PML4[0], PDPT[0] and PDPT[3], the 2 MiB pages at
     * 0 (tables, kernel stack, payload) and 2 MiB (user stack), and the one holding the ROM.
     * The other entries may hold stale data until CPL3 rewrites them all and asks for a
     * CR3 load (MG_GATE_CR3) to the complete identity map before it touches anything else.
     */
    movl $MG_PDPT + MG_PTE_TABLE, MG_PML4
    movl $0, MG_PML4 + 4
    movl $MG_PD + MG_PTE_TABLE, MG_PDPT
    movl $0, MG_PDPT + 4
    movl $MG_PD + 3 * 4096 + MG_PTE_TABLE, MG_PDPT + 3 * 8
    movl $0, MG_PDPT + 3 * 8 + 4
    movl $0 + MG_PTE_LARGE, MG_PD
    movl $0, MG_PD + 4
    movl $0x200000 + MG_PTE_LARGE, MG_PD + 8
    movl $0, MG_PD + 12
    movl $0xffe00000 + MG_PTE_LARGE, MG_PD + 3 * 4096 + 511 * 8
    movl $0, MG_PD + 3 * 4096 + 511 * 8 + 4

    mov $MG_PML4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax              /* PAE */
    mov %eax, %cr4
    mov $0xc0000080, %ecx       /* EFER */
    rdmsr
    or $0x100, %eax             /* LME */
    wrmsr
    mov %cr0, %eax
    and $0x9ffffffb, %eax       /* clear CD, NW, EM */
    or $0x80000001, %eax        /* PG, PE */
    mov %eax, %cr0
    ljmp $MG_SEL_CODE64, $mg_entry64

    .code64
mg_entry64:
    mov $MG_SEL_TSS, %eax
    ltr %ax
    lidt idt_desc(%rip)
    mov $MG_KSTACK_TOP, %esp
    pushq $MG_SEL_UDATA
    pushq $MG_USTACK_TOP
    pushq $MG_USER_RFLAGS
    pushq $MG_SEL_UCODE64
    mov $mg_boot_user_entry, %eax
    pushq %rax
    iretq

    .balign 8
    .globl mg_gdt_template
mg_gdt_template:
gdt_template:
    .quad 0
    .quad 0x00cf9a000000ffff    /* 0x08 code32, DPL0 */
    .quad 0x00cf92000000ffff    /* 0x10 data, DPL0 */
    .quad 0x00af9a000000ffff    /* 0x18 code64, DPL0 */
    .quad 0x00cff2000000ffff    /* 0x20 data, DPL3 */
    .quad 0x00affa000000ffff    /* 0x28 code64, DPL3 */
    /* 0x30 available 64-bit TSS at MG_TSS, limit MG_TSS_LIMIT */
    .word MG_TSS_LIMIT, MG_TSS & 0xffff
    .byte (MG_TSS >> 16) & 0xff, 0x89, 0x00, (MG_TSS >> 24) & 0xff
    .long 0, 0
gdt_template_end:

    .globl mg_gdt_desc_rom
mg_gdt_desc_rom:                /* the template itself, used by the ROM's real-mode stub */
    .word MG_GDT_LIMIT
    .long gdt_template
    .balign 8
gdt_desc:
    .word MG_GDT_LIMIT
    .long MG_GDT
    .balign 8
idt_desc:
    .word 256 * 16 - 1
    .quad MG_IDT
