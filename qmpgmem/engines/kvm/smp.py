"""Several vCPUs on the direct KVM VM: just enough of a local APIC to start the APs.

Why emulate INIT/SIPI rather than start the APs in a prepared state: the micro guest is one
image for both engines, and under QEMU its BSP starts the APs with INIT + SIPI through the
xAPIC page; doing the same here keeps one AP boot path (images/microguest/smp_boot.S). The VM
has no in-kernel irqchip (HLT must stay a userspace exit, see vcpu_thread.py), so accesses to
the APIC page at 0xfee00000 are MMIO exits: the ID register answers the vCPU's index (vCPU k is
APIC ID k, as QEMU numbers them), an ICR write with delivery mode SIPI to APIC ID k starts that
vCPU's thread in real mode at ``vector << 12``, as KVM's own LAPIC would
(kvm_vcpu_deliver_sipi_vector). Everything else reads 0 (ICR delivery status: idle) and
writes are dropped; the guest uses no interrupts.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.objects import Vcpu
from qmpgmem.engines.kvm.vcpu_thread import VcpuRunner

APIC_BASE: Final = 0xFEE00000
APIC_SIZE: Final = 0x1000
APIC_ID: Final = 0x20
APIC_VERSION: Final = 0x30
APIC_ICR_LO: Final = 0x300
APIC_ICR_HI: Final = 0x310
#: xAPIC version register of an integrated APIC (QEMU's: version 0x14, max LVT 5)
VERSION_VALUE: Final = 0x50014
DM_INIT, DM_SIPI = 5, 6


class LocalApics:
    """APIC-page MMIO of every vCPU; ``on_sipi(target, vector)`` starts an AP."""

    def __init__(self, count: int, on_sipi: Callable[[int, int], None]) -> None:
        self._count = count
        self._on_sipi = on_sipi
        self._icr_hi = [0] * count
        self._lock = threading.Lock()

    def mmio(self, vcpu_id: int, mmio: abi._kvm_run_mmio) -> bool:
        """Handle one MMIO exit of ``vcpu_id``; False when it is not on the APIC page."""
        offset = mmio.phys_addr - APIC_BASE
        if not 0 <= offset < APIC_SIZE:
            return False
        size = min(mmio.len, 8)
        if not mmio.is_write:
            value = {APIC_ID: vcpu_id << 24, APIC_VERSION: VERSION_VALUE}.get(offset, 0)
            for i in range(8):
                mmio.data[i] = (value >> (8 * i)) & 0xFF if i < size else 0
            return True
        value = int.from_bytes(bytes(mmio.data[:size]), "little")
        if offset == APIC_ICR_HI:
            self._icr_hi[vcpu_id] = value
        elif offset == APIC_ICR_LO and (value >> 8) & 7 == DM_SIPI:
            target = self._icr_hi[vcpu_id] >> 24
            if target < self._count and target != vcpu_id:
                with self._lock:
                    self._on_sipi(target, value & 0xFF)
        return True


class ApThreads:
    """The APs of one VM: each one's reset state, and its worker thread once a SIPI came.

    ``make_runner`` builds the (not yet started) runner of a vCPU; ``event`` logs a line.
    """

    def __init__(
        self, make_runner: Callable[[Vcpu], VcpuRunner], event: Callable[[str], None]
    ) -> None:
        self._make_runner = make_runner
        self._event = event
        self._vcpus: dict[int, Vcpu] = {}
        self._reset: dict[int, tuple[abi.kvm_regs, abi.kvm_sregs]] = {}
        self._runners: dict[int, VcpuRunner] = {}
        self.closed = False

    def add(self, vcpu: Vcpu) -> None:
        """An AP, right after KVM_CREATE_VCPU: its state now is the one a SIPI starts from."""
        self._vcpus[vcpu.id] = vcpu
        self._reset[vcpu.id] = (vcpu.get_regs(), vcpu.get_sregs())

    def on_sipi(self, target: int, vector: int) -> None:
        """From the sender's thread: start ``target`` at ``vector``, once per boot."""
        if self.closed or target in self._runners or target not in self._vcpus:
            return
        vcpu = self._vcpus[target]
        enter_sipi_state(vcpu, self._reset[target], vector)
        runner = self._runners[target] = self._make_runner(vcpu)
        self._event(f"SIPI vector {vector:#x}: vCPU {target} started")
        runner.start()

    @property
    def runners(self) -> list[VcpuRunner]:
        return list(self._runners.values())

    def forget(self) -> None:
        """After the threads stopped for a reset: every AP waits for a SIPI again."""
        self._runners.clear()


def enter_sipi_state(vcpu: Vcpu, reset: tuple[abi.kvm_regs, abi.kvm_sregs], vector: int) -> None:
    """The vCPU's reset state with CS:IP = (vector << 8):0, what a SIPI leaves."""
    regs, sregs = reset
    sregs = abi.kvm_sregs.from_buffer_copy(sregs)
    regs = abi.kvm_regs.from_buffer_copy(regs)
    sregs.cs.selector = vector << 8
    sregs.cs.base = vector << 12
    regs.rip = 0
    vcpu.set_sregs(sregs)
    vcpu.set_regs(regs)
