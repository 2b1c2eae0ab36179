"""Where each scenario region sits in guest-physical memory, the same on every engine.

Why one place: the micro guest owns the first ``SYS_SIZE`` bytes (page tables, stacks, its
image); scenario regions follow in the order the scenario lists them. The QEMU engine gets
this layout from ``-numa node,memdev=`` (nodes are laid out back to back from GPA 0); the KVM
engine places its memslots the same way, so a range has the same GPA on both engines.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from qmpgmem.engines.base import GuestRange
from qmpgmem.guest.protocol import SYS_SIZE

SYS_REGION_ID = "qmpgmem-sys"


class _SizedRegion(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class PlacedRegion:
    id: str
    size: int
    gpa: int


@dataclass(frozen=True)
class Layout:
    regions: tuple[PlacedRegion, ...]

    @property
    def total_size(self) -> int:
        """Guest RAM including the guest's own area."""
        return SYS_SIZE + sum(r.size for r in self.regions)

    def region(self, region_id: str) -> PlacedRegion:
        for r in self.regions:
            if r.id == region_id:
                return r
        raise KeyError(f"no memory region {region_id!r}")

    def resolve(self, region_id: str, offset: int, size: int) -> GuestRange:
        r = self.region(region_id)
        if offset < 0 or size <= 0 or offset + size > r.size:
            raise ValueError(
                f"range [{offset:#x}, {offset + size:#x}) does not fit region {region_id!r} "
                f"of size {r.size:#x}"
            )
        return GuestRange(region=region_id, offset=offset, size=size, gpa=r.gpa + offset)


def place_regions(regions: Sequence[_SizedRegion]) -> Layout:
    """Lay regions out back to back after the guest's own area."""
    placed, gpa = [], SYS_SIZE
    for r in regions:
        placed.append(PlacedRegion(id=r.id, size=r.size, gpa=gpa))
        gpa += r.size
    return Layout(tuple(placed))
