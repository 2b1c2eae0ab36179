/*
 * Payload entry (CPL3) and the few CPL0 gates. mg_user_start is where both boot routes land
 * at CPL3; the gates are the only CPL0 code that runs after boot: a hypercall (which KVM
 * refuses at CPL>0), a CR3 load, idling, and the exception and NMI handlers.
 */
#include "layout.h"

    .section .text.start, "ax"
    .code64
    .globl mg_user_start
mg_user_start:
    mov $MG_USTACK_TOP, %esp
    xor %eax, %eax
    mov $mg_bss_start, %edi
    mov $mg_bss_qwords, %ecx
    rep stosq
    call mg_main
1:  jmp 1b

    .text
    /*
     * The gate (int3, or int $0x80 where that works): %rdi selects the function, the
     * hypercall registers pass through. Few instructions: on kvm_pvm each is emulated.
     */
    .balign 16
    .globl mg_gate
mg_gate:
    cmp $MG_GATE_VMCALL, %edi
    je 1f
    cmp $MG_GATE_VMMCALL, %edi
    je 2f
    cmp $MG_GATE_IDLE, %edi
    je mg_idle_begin
    mov %rsi, %cr3              /* MG_GATE_CR3 */
    iretq
1:  vmcall
    iretq
2:  vmmcall
    iretq

    /*
     * Idle: halt unless a wake-up came since CPL3 read mg_wakeups (%esi) and found nothing
     * to do. A wake-up NMI that lands between the compare and the hlt is moved past the hlt
     * by mg_nmi, so none is lost. IF stays 0: only an NMI (or the kvm engine) ends the hlt.
     */
    .globl mg_idle_begin, mg_idle_end
mg_idle_begin:
    cmp mg_wakeups(%rip), %esi
    jne mg_idle_end
    hlt
mg_idle_end:
    iretq

    /* NMI (vector 2): a wake-up from COM1 through the IOAPIC. Count it, skip a pending hlt. */
    .balign 16
    .globl mg_nmi
mg_nmi:
    incl mg_wakeups(%rip)
    push %rax
    mov 8(%rsp), %rax           /* the interrupted RIP */
    cmp $mg_idle_begin, %rax
    jb 1f
    cmp $mg_idle_end, %rax
    jae 1f
    movq $mg_idle_end, 8(%rsp)
1:  pop %rax
    iretq

    .data
    .balign 4
    .globl mg_wakeups
mg_wakeups:
    .long 0
    .text

    /* Exceptions 0-31: report on the serial line and stop (see fault.c). */
    .macro FAULT vec, err
    .balign 16
fault_\vec:
    .if \err == 0
    pushq $0
    .endif
    pushq $\vec
    jmp fault_common
    .endm

    FAULT 0, 0
    FAULT 1, 0
    FAULT 2, 0
    FAULT 3, 0
    FAULT 4, 0
    FAULT 5, 0
    FAULT 6, 0
    FAULT 7, 0
    FAULT 8, 1
    FAULT 9, 0
    FAULT 10, 1
    FAULT 11, 1
    FAULT 12, 1
    FAULT 13, 1
    FAULT 14, 1
    FAULT 15, 0
    FAULT 16, 0
    FAULT 17, 1
    FAULT 18, 0
    FAULT 19, 0
    FAULT 20, 0
    FAULT 21, 1
    FAULT 22, 0
    FAULT 23, 0
    FAULT 24, 0
    FAULT 25, 0
    FAULT 26, 0
    FAULT 27, 0
    FAULT 28, 0
    FAULT 29, 1
    FAULT 30, 1
    FAULT 31, 0

fault_common:
    mov %rsp, %rdi              /* struct mg_fault_frame * */
    and $-16, %rsp
    call mg_fault_report
2:  cli
    hlt
    jmp 2b

    .section .rodata
    .balign 8
    .globl mg_fault_stubs
mg_fault_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad fault_\v
    .endr
