"""Read-only memslots (the ROM's kind of memory): what a guest store, and the CPU's own
write of a descriptor's accessed bit, turn into.

Mirrors api.rst's KVM_MEM_READONLY promise ("writes are posted to userspace as KVM_EXIT_MMIO
exits"); no selftest exercises the implicit write of a segment load, which is what decides
whether a ROM with its GDT inside it runs from a read-only slot (the direct engine maps its
ROM as RAM, as microvm does: qmpgmem/engines/kvm/memory.py).
"""

from __future__ import annotations

import struct
from typing import Final

from qmpgmem.engines.kvm import abi, longmode
from qmpgmem.engines.kvm.contract.core import (
    API,
    Env,
    Mismatch,
    check,
    on_emulated_cpu,
    run_with_deadline,
)
from qmpgmem.engines.kvm.contract.guest import exit_name
from qmpgmem.engines.kvm.objects import Mapping

#: Measured on kvm_pvm (memslot.readonly_descriptor): the implicit accessed-bit write.
PVM_READONLY_DESCRIPTOR: Final = (
    "KVM_RUN never returns when the instruction kvm_pvm emulates (a far jump loading CS) has "
    "to set the accessed bit of a descriptor in read-only memory; the vCPU retries it forever "
    "(an explicit store to the same slot does exit with KVM_EXIT_MMIO, see "
    "memslot.readonly_store). This is why a ROM whose GDT sits in a read-only ROM hangs "
    "after setting CR0.PE on pc/q35, and why the direct engine maps its ROM as RAM, as "
    "microvm does"
)


#: Measured in the lab (kvm_amd in L1 on QEMU TCG's SVM, Linux 7.2.13; memslot.readonly_descriptor).
TCG_SVM_NO_ACCESSED_BIT: Final = (
    "seen only on QEMU TCG's SVM (the lab's emulated CPU): its far jump loads CS without "
    "setting the descriptor's accessed bit (QEMU target/i386/tcg/seg_helper.c: "
    "helper_ljmp_protected has no accessed-bit store; helper_load_seg, for data segments, has "
    "one), so no write reaches the read-only slot, no nested page fault reaches KVM and there "
    "is nothing to post as KVM_EXIT_MMIO; the guest runs on and the descriptor stays "
    "0x00cf9a000000ffff. Upstream expects the CPU to set the bit on the load (AMD APM, Intel "
    "SDM), the write to fault on the read-only page and KVM to post it as KVM_EXIT_MMIO"
)


# -- read-only memslots (the ROM's kind of memory) --------------------------------------------


#: Real-mode code at GPA 0: lgdt from a GDT in a read-only slot at 0x10000, CR0.PE, far jump
#: to 32-bit code (loading CS sets the descriptor's accessed bit: a write to the read-only
#: slot), which writes port 0x10 and spins.
CODE_PE_SWITCH: Final = bytes.fromhex(
    "660f01160001"  # lgdtl 0x100
    "0f20c0 6683c801 0f22c0"  # mov %cr0,%eax; or $1,%eax; mov %eax,%cr0
    "66ea000200000800"  # ljmpl $0x08,$0x200
)
GDT_DESC_AT: Final = 0x100
TARGET32_AT: Final = 0x200
CODE32_OUT: Final = bytes.fromhex("e610 ebfe")  # out %al,$0x10; jmp .
RO_GPA: Final = 0x10000
#: null, flat 32-bit code with the accessed bit clear (0x9a), flat data (0x92)
RO_GDT: Final = (0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF)
#: 64-bit CPL3: movb $1,0x200000 (the read-only slot); out %al,$0x10; jmp .
CODE_CPL3_STORE: Final = bytes.fromhex("c60425000020 0001 e610 ebfe")


@check(
    "memslot.readonly_store",
    "a guest store into a KVM_MEM_READONLY memslot is posted to userspace as KVM_EXIT_MMIO "
    "(a write at that GPA) and leaves the memory unchanged (64-bit CPL3 store)",
    f"{API}: KVM_SET_USER_MEMORY_REGION (KVM_MEM_READONLY)",
)
def _readonly_store(env: Env) -> None:
    with env.vm() as vm, Mapping.anonymous(1 << 20) as ram, Mapping.anonymous(env.page) as ro:
        longmode.write_tables(ram)
        ram.write(longmode.FREE_GPA, CODE_CPL3_STORE)
        vm.set_user_memory_region(0, 0, ram.size, ram.addr)
        vm.set_user_memory_region(1, 0x200000, ro.size, ro.addr, abi.KVM_MEM_READONLY)
        vcpu = env.vcpu(vm)
        longmode.enter_user_long_mode(vcpu, longmode.FREE_GPA, 0x80000)
        reason = run_with_deadline(vcpu, 1.0)
        if reason is None:
            raise Mismatch("KVM_RUN did not return within 1 s")
        run = vcpu.kvm_run
        if reason != abi.Exit.MMIO or not run.mmio.is_write or run.mmio.phys_addr != 0x200000:
            raise Mismatch(f"the store gave {exit_name(reason)}, not an MMIO write at 0x200000")
        if ro.read(0, 1) != b"\x00":
            raise Mismatch("the read-only memory changed")


@check(
    "memslot.readonly_descriptor",
    "loading a segment from a GDT in a KVM_MEM_READONLY memslot, which sets the "
    "descriptor's accessed bit, is posted to userspace as a KVM_EXIT_MMIO write inside the "
    "GDT; the guest then goes on (real mode → protected mode far jump)",
    f"{API}: KVM_SET_USER_MEMORY_REGION (KVM_MEM_READONLY: writes are posted to userspace "
    "as KVM_EXIT_MMIO exits)",
    deviations={
        "kvm_pvm": PVM_READONLY_DESCRIPTOR,
        on_emulated_cpu("kvm_amd"): TCG_SVM_NO_ACCESSED_BIT,
    },
)
def _readonly_descriptor(env: Env) -> None:
    with env.vm() as vm, Mapping.anonymous(0x10000) as ram, Mapping.anonymous(env.page) as ro:
        ram.write(0, CODE_PE_SWITCH)
        ram.write(GDT_DESC_AT, struct.pack("<HI", 8 * len(RO_GDT) - 1, RO_GPA))
        ram.write(TARGET32_AT, CODE32_OUT)
        ro.write(0, struct.pack(f"<{len(RO_GDT)}Q", *RO_GDT))
        vm.set_user_memory_region(0, 0, ram.size, ram.addr)
        vm.set_user_memory_region(1, RO_GPA, ro.size, ro.addr, abi.KVM_MEM_READONLY)
        vcpu = env.vcpu(vm)
        sregs = vcpu.get_sregs()
        sregs.cs.base, sregs.cs.selector = 0, 0
        vcpu.set_sregs(sregs)
        vcpu.set_regs(abi.kvm_regs(rip=0, rflags=2))
        saw_mmio = False
        for _ in range(16):
            reason = run_with_deadline(vcpu, 1.0)
            if reason is None:
                raise Mismatch(
                    "KVM_RUN did not return within 1 s"
                    + (" after the MMIO exit" if saw_mmio else " (no exit at all)")
                )
            run = vcpu.kvm_run
            if reason == abi.Exit.MMIO:
                addr = run.mmio.phys_addr
                if not run.mmio.is_write or not RO_GPA <= addr < RO_GPA + 8 * len(RO_GDT):
                    raise Mismatch(
                        f"an MMIO {'write' if run.mmio.is_write else 'read'} at {addr:#x}"
                    )
                saw_mmio = True
                continue
            if reason == abi.Exit.IO and run.io.port == 0x10:
                if saw_mmio:
                    return
                code = struct.unpack_from("<Q", ro.read(8, 8))[0]
                if code != RO_GDT[1]:
                    raise Mismatch(
                        f"the accessed-bit write reached read-only memory without an exit "
                        f"(code descriptor now {code:#018x})"
                    )
                raise Mismatch(
                    "the guest reached protected mode with no accessed-bit write at all: no "
                    f"exit, and the code descriptor in read-only memory is still {code:#018x} "
                    "(accessed bit clear)"
                )
            raise Mismatch(f"unexpected exit {exit_name(reason)}")
        raise Mismatch("the guest did not reach protected mode")
