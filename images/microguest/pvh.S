/* The Xen PVH ELF note (XEN_ELFNOTE_PHYS32_ENTRY = 18): QEMU's -kernel enters mg_entry32. */
    .section .note.pvh, "a", @note
    .balign 4
    .long 4                 /* namesz: "Xen\0" */
    .long 4                 /* descsz */
    .long 18                /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .balign 4
    .long mg_entry32
    .balign 4
