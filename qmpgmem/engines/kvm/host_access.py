"""The host's side of a kvm engine VM's memory: reads, in-place hashes and writes of the
scenario regions through this process's own mappings, and fallocate on their guest_memfds.

Why apart from the engine: these are the steps a scenario's ``host.*`` actions become, and
they need the VM's memory (:class:`~.memory.GuestMemory`) and whether its VM type has private
memory, nothing of the VM's lifecycle (engine.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from qmpgmem import fasthash
from qmpgmem.engines.base import GuestRange, HostHash
from qmpgmem.engines.kvm.memory import GuestMemory, Placed
from qmpgmem.errors import EngineError, UnsupportedStep

__all__ = ["HostAccess"]

_BIG_COPY: Final = 1 << 20  # copies above this go to a worker thread


class HostAccess:
    """The host's accesses to one VM's regions; ``private_mem``: its VM type has private
    memory (a guest_memfd page may then be private, and a read must fault pages in first)."""

    def __init__(
        self, memory: GuestMemory, private_mem: bool, event: Callable[[str], None]
    ) -> None:
        self._memory = memory
        self._private_mem = private_mem
        self._event = event

    def _placed(self, region: str) -> Placed:
        try:
            return self._memory.region(region)
        except KeyError:
            raise EngineError(f"no region {region!r} in this VM") from None

    def _host_placed(self, rng: GuestRange) -> Placed:
        placed = self._placed(rng.region)
        if not placed.host_access:
            raise UnsupportedStep(
                f"region {rng.region}: a guest_memfd with mmap but without init_shared holds "
                "private memory; the host cannot touch its mapping (the kernel sends SIGBUS)"
            )
        return placed

    async def read(self, rng: GuestRange) -> bytes:
        mapping = self._host_placed(rng).mapping
        if rng.size > _BIG_COPY:
            return await asyncio.to_thread(mapping.read, rng.offset, rng.size)
        return mapping.read(rng.offset, rng.size)

    async def hash(self, rng: GuestRange) -> HostHash:
        """The region's own mapping hashed in place; faulted in first where private
        guest_memfd pages can be, so one is an error of the step, not a SIGBUS."""
        placed = self._host_placed(rng)
        addr = placed.mapping.address(rng.offset, rng.size)
        populate = placed.in_place and self._private_mem
        try:
            value = await asyncio.to_thread(fasthash.hash_address, addr, rng.size, populate)
        except OSError as exc:
            raise EngineError(
                f"region {rng.region}: the kernel would not fault [{rng.offset:#x}, "
                f"{rng.offset + rng.size:#x}) in for the host ({exc.strerror}); private "
                "guest_memfd pages are not the host's to read"
            ) from exc
        return HostHash(value, placed.host_view)

    async def write(self, rng: GuestRange, data: bytes) -> None:
        if len(data) != rng.size:
            raise EngineError(f"host_write of {len(data)} bytes into a {rng.size}-byte range")
        mapping = self._host_placed(rng).mapping
        if rng.size > _BIG_COPY:
            await asyncio.to_thread(mapping.write, rng.offset, data)
        else:
            mapping.write(rng.offset, data)

    def _gmem(self, rng: GuestRange) -> Placed:
        placed = self._placed(rng.region)
        if placed.gmem is None:
            raise UnsupportedStep(
                f"region {rng.region} is backend {placed.region.backend}, not guest_memfd"
            )
        return placed

    async def punch_hole(self, rng: GuestRange) -> None:
        placed = self._gmem(rng)
        assert placed.gmem is not None
        try:
            await asyncio.to_thread(placed.gmem.punch_hole, rng.offset, rng.size)
        except OSError as exc:
            raise EngineError(f"punching a hole in region {rng.region}: {exc}") from exc
        self._event(f"punch hole {rng.region} {rng.offset:#x}+{rng.size:#x}")

    async def allocate(self, rng: GuestRange) -> None:
        placed = self._gmem(rng)
        assert placed.gmem is not None
        try:
            await asyncio.to_thread(placed.gmem.allocate, rng.offset, rng.size)
        except OSError as exc:
            raise EngineError(f"allocating region {rng.region}: {exc}") from exc
        self._event(f"allocate {rng.region} {rng.offset:#x}+{rng.size:#x}")
