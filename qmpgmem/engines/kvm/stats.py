"""A vCPU's counters from KVM's binary statistics (KVM_GET_STATS_FD, api.rst "KVM_GET_STATS_FD").

Why: a vCPU that stays inside KVM_RUN makes no exit the engine sees, so only KVM can say what
it does meanwhile: how many times it left the guest, for which kind of page fault (taken,
fixed, spurious, emulated), halted, and so on. Two readings apart give the rates that tell a
busy guest from a fault that KVM retries without end. The file is read with pread while the
vCPU runs: it takes no vCPU lock.
"""

from __future__ import annotations

import os
import struct
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm import sys as ksys

#: struct kvm_stats_header: flags, name_size, num_desc, id_offset, desc_offset, data_offset
_HEADER: Final = struct.Struct("=6I")
#: struct kvm_stats_desc without its name: flags, exponent, size, offset, bucket_size
_DESC: Final = struct.Struct("=IhHII")
_TYPE_MASK: Final = 0xF  # KVM_STATS_TYPE_*: 0 cumulative, 1 instant, 2 peak, 3/4 histograms
_HISTOGRAMS: Final = (3, 4)


class VcpuStats:
    """The statistics file of one vCPU; ``read()`` gives name -> value of its scalars."""

    def __init__(self, vcpu_fd: int) -> None:
        self.fd = ksys.ioctl(vcpu_fd, abi.KVM_GET_STATS_FD)
        try:
            head = os.pread(self.fd, _HEADER.size, 0)
            _, name_size, count, _, desc_offset, self._data_offset = _HEADER.unpack(head)
            step = _DESC.size + name_size
            table = os.pread(self.fd, step * count, desc_offset)
        except BaseException:
            os.close(self.fd)
            raise
        #: (name, offset of its first u64 in the data block) of each scalar statistic
        self._scalars: list[tuple[str, int]] = []
        self._data_size = 0
        for i in range(count):
            flags, _, size, offset, _ = _DESC.unpack_from(table, i * step)
            raw = table[i * step + _DESC.size : (i + 1) * step]
            self._data_size = max(self._data_size, offset + 8 * size)
            if flags & _TYPE_MASK not in _HISTOGRAMS and size == 1:
                self._scalars.append((raw.split(b"\0", 1)[0].decode(), offset))

    def read(self) -> dict[str, int]:
        data = os.pread(self.fd, self._data_size, self._data_offset)
        return {name: int.from_bytes(data[off : off + 8], "little") for name, off in self._scalars}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def changes(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counters that moved between two readings, by how much."""
    return {k: after[k] - v for k, v in before.items() if after.get(k, v) != v}


__all__ = ["VcpuStats", "changes"]
