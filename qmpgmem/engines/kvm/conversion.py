"""KVM_HC_MAP_GPA_RANGE for the kvm engine: the guest's conversion requests, answered as the
kernel selftests' VMM answers them.

Why apart from the engine: a conversion is memory attributes plus discarding the side the
guest left (to private: the shared mapping; to shared: a hole in the guest_memfd), which
needs the VM and its memory and nothing of the engine's lifecycle. A VM type without private
memory answers ``-KVM_ENOSYS`` (-1000): the code the kernel itself gives when no VMM handles
the hypercall, so a scenario expects the same value under both engines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm import sys as ksys
from qmpgmem.engines.kvm.memory import GuestMemory, Placed
from qmpgmem.engines.kvm.objects import Vm
from qmpgmem.guest.protocol import MASK64

# include/uapi/linux/kvm_para.h error codes, returned to the guest negated
KVM_ENOSYS: Final = 1000
KVM_EINVAL: Final = 22


class Conversions:
    """Answers the guest's hypercall exits on one VM; ``private_mem``: the VM type has it."""

    def __init__(
        self, vm: Vm, memory: GuestMemory, private_mem: bool, event: Callable[[str], None]
    ) -> None:
        self._vm = vm
        self._memory = memory
        self.private_mem = private_mem
        self._event = event

    def on_hypercall(self, hc: abi._kvm_run_hypercall) -> None:
        """Called from the vCPU thread with the exit KVM filled; sets the guest's rax."""
        nr, gpa, npages, attrs = hc.nr, hc.args[0], hc.args[1], hc.args[2]
        ret = (
            self.map_gpa_range(gpa, npages, attrs)
            if nr == abi.KVM_HC_MAP_GPA_RANGE
            else (-KVM_ENOSYS)
        )
        hc.ret = ret & MASK64
        self._event(f"hypercall nr {nr} gpa {gpa:#x} npages {npages:#x} attrs {attrs:#x} -> {ret}")

    def map_gpa_range(self, gpa: int, npages: int, attrs: int) -> int:
        """KVM_HC_MAP_GPA_RANGE for the guest; returns the value for its rax."""
        if not self.private_mem:
            return -KVM_ENOSYS
        size = npages * 4096
        placed = self._memory.find(gpa, size)
        if placed is None or placed.gmem is None or npages == 0:
            return -KVM_EINVAL
        private = bool(attrs & abi.KVM_MAP_GPA_RANGE_ENCRYPTED)
        try:
            self._vm.set_memory_attributes(
                gpa, size, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE if private else 0
            )
            discard_other_side(placed, gpa - placed.gpa, size, private)
        except OSError as exc:
            return -(exc.errno or KVM_EINVAL)
        return 0


def discard_other_side(placed: Placed, offset: int, size: int, private: bool) -> None:
    """After a conversion, free the backing the guest no longer uses (as QEMU's
    ram_block_discard_range: MADV_REMOVE for shared memory, MADV_DONTNEED for private
    anonymous memory)."""
    if placed.in_place:
        return  # one file holds both states; nothing separate to free
    assert placed.gmem is not None
    if private:
        advice = ksys.MADV_DONTNEED if placed.private_anonymous else ksys.MADV_REMOVE
        ksys.madvise(placed.mapping.addr + offset, size, advice)
    else:
        placed.gmem.punch_hole(offset, size)
