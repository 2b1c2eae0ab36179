/*
 * ROM-only pieces: the reset vector, the real-mode stub, the ROM header, and the CPL3 stub
 * that copies the payload (linked at MG_PAYLOAD) out of the ROM before jumping into it.
 * The ROM is 64 KiB at 0xffff0000; in real mode CS base is 0xffff0000, so 16-bit offsets
 * below are ROM offsets.
 */
#include "layout.h"

    .section .boot, "ax"
    .code16
    .globl mg_entry16
mg_entry16:
    cli
    cld
    lgdtl %cs:(mg_gdt_desc_rom - MG_ROM_BASE)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    mov $MG_SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    ljmpl $MG_SEL_CODE32, $mg_entry32

    /* CPL3 from here on: copy the payload to RAM, clear nothing else, jump to it. */
    .code64
    .globl mg_rom_user_entry
mg_rom_user_entry:
    mov $mg_payload_rom, %esi
    mov $mg_payload_start, %edi
    mov $mg_payload_qwords, %ecx
    rep movsq
    mov $mg_user_start, %eax
    jmp *%rax

    .section .romhdr, "a"
    /* struct mg_rom_header: fixed at ROM offset 0xffc0, see docs/guest-protocol.md */
    .ascii "QMGUEST\0"              /* 0x00 magic */
    .long 1                         /* 0x08 header version */
    .long MG_PROTOCOL_VERSION       /* 0x0c guest protocol version */
    .long mg_entry16 - MG_ROM_BASE  /* 0x10 real-mode entry: offset in the ROM (CS base) */
    .long mg_entry32                /* 0x14 32-bit protected-mode entry (physical) */
    .long MG_SYS_SIZE               /* 0x18 size of the guest's reserved area */
    .long MG_PAYLOAD                /* 0x1c where the payload runs */
    .long mg_payload_bytes          /* 0x20 its size in the ROM (at offset 0) */
    .long mg_idle_end               /* 0x24 RIP after the idle hlt (0: the guest never idles) */
    .long mg_rom_user_entry         /* 0x28 64-bit CPL3 entry: the state mg_entry64 leaves */
    .long mg_user_start             /* 0x2c the same in the payload, once it is at MG_PAYLOAD */

    .section .reset, "ax"
    .code16
    .globl mg_reset_vector
mg_reset_vector:
    jmp mg_entry16                  /* the linker pads the rest of the 16 bytes */
