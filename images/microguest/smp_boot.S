/*
 * The boot path of an application processor (AP): the SIPI trampoline (real mode, copied to
 * MG_AP_TRAMP by the BSP), 32-bit setup, 64-bit entry, iretq to CPL3 in mg_ap_main. It is
 * short on purpose: on kvm_pvm real mode and CPL0 are emulated one instruction at a time.
 * The BSP has built everything this path uses before it sends the SIPI: the GDT with this
 * vCPU's TSS descriptor, the TSS, the page tables, the IDT; mg_ap_booting says which vCPU
 * index this AP is (the BSP starts one AP at a time).
 */
#include "layout.h"

    .text
    .code16
    .globl mg_ap_tramp, mg_ap_tramp_end
mg_ap_tramp:                    /* CS base = MG_AP_TRAMP, so offsets are from here */
    cli
    cld
    lgdtl %cs:(ap_gdt_desc - mg_ap_tramp)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $MG_SEL_CODE32, $mg_ap_entry32
    .balign 8
ap_gdt_desc:
    .word MG_AP_GDT_LIMIT
    .long MG_GDT
mg_ap_tramp_end:

    .code32
mg_ap_entry32:
    mov $MG_SEL_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov $MG_IDMAP_PML4, %eax    /* the BSP's complete tables */
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
    ljmp $MG_SEL_CODE64, $mg_ap_entry64

    .code64
mg_ap_entry64:
    mov mg_ap_booting, %ebx     /* this AP's vCPU index k */
    mov %ebx, %eax
    shl $4, %eax
    add $MG_SEL_TSS, %eax       /* TSS selector 0x30 + 16*k */
    ltr %ax
    lidt ap_idt_desc
    lea 1(%rbx), %eax
    imul $MG_AP_KSTACK_SIZE, %eax, %esp
    add $MG_AP_KSTACK, %esp
    lea 1(%rbx), %eax
    imul $MG_AP_USTACK_SIZE, %eax, %eax
    add $MG_AP_USTACK, %eax
    pushq $MG_SEL_UDATA
    pushq %rax
    pushq $MG_USER_RFLAGS
    pushq $MG_SEL_UCODE64
    pushq $ap_user_start
    iretq

ap_user_start:                  /* CPL3; %ebx = k */
    mov %ebx, %edi
    call mg_ap_main
1:  jmp 1b

    .section .rodata
    .balign 8
ap_idt_desc:
    .word 256 * 16 - 1
    .quad MG_IDT
