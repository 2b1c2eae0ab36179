"""The host's side of a kvm engine VM's memory: reads, in-place hashes and writes of the
scenario regions through this process's own mappings, and fallocate on their guest_memfds.

Why apart from the engine: these are the steps a scenario's ``host.*`` actions become, and
they need the VM's memory (:class:`~.memory.GuestMemory`) and whether its VM type has private
memory, nothing of the VM's lifecycle (engine.py).

Why a count of accesses in flight: a big read, hash or write runs in a worker thread over the
engine's own mappings, and the step that started it may be gone already (its timeout
cancels the coroutine, not the thread). ``close()``, called by the engine's ``stop()`` before
it unmaps anything, refuses new accesses and waits for those under way; hashes and writes go
in chunks and give up between two of them once closing began (an EngineError for the step),
so ``stop()`` waits for one chunk at most, not for a whole region.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

from qmpgmem import fasthash
from qmpgmem.engines.base import GuestRange, HostHash
from qmpgmem.engines.kvm.memory import GuestMemory, Placed
from qmpgmem.engines.kvm.objects import GuestMemfd, Mapping
from qmpgmem.errors import EngineError, UnsupportedStep
from qmpgmem.guest.protocol import MASK64, WORD, finish_hash

__all__ = ["HostAccess"]

_BIG_COPY: Final = 1 << 20  # copies above this go to a worker thread
#: Hashes and writes go this much at a time, so a closing VM waits for one chunk at most.
CHUNK: Final = 64 << 20
_P = ParamSpec("_P")
_T = TypeVar("_T")


class HostAccess:
    """The host's accesses to one VM's regions; ``private_mem``: its VM type has private
    memory (a guest_memfd page may then be private, and a read must fault pages in first)."""

    def __init__(
        self, memory: GuestMemory, private_mem: bool, event: Callable[[str], None]
    ) -> None:
        self._memory = memory
        self._private_mem = private_mem
        self._event = event
        self._cond = threading.Condition()
        self._in_flight = 0
        self._closing = False

    # -- accesses in flight ------------------------------------------------------------------
    def _enter(self, region: str) -> None:
        with self._cond:
            if self._closing:
                raise EngineError(
                    f"region {region}: the VM is stopping; the host's access was not started"
                )
            self._in_flight += 1

    def _leave(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self._cond.notify_all()

    def _check_open(self, region: str) -> None:
        """Between two chunks: give up once the VM is stopping (its memory goes next)."""
        if self._closing:
            raise EngineError(f"region {region}: the VM stopped during the host's access")

    def _guarded(
        self, region: str, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        """``fn`` counted as in flight, in whichever thread runs it; refused once closing.

        Counted in the thread itself: a thread that never started (its step cancelled
        first) holds nothing, and one that runs holds the memory until it returns."""
        self._enter(region)
        try:
            return fn(*args, **kwargs)
        finally:
            self._leave()

    async def _in_thread(
        self, region: str, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs
    ) -> _T:
        call = functools.partial(self._guarded, region, fn, *args, **kwargs)
        return await asyncio.to_thread(call)

    @property
    def in_flight(self) -> int:
        """Accesses under way now (in worker threads or the event loop)."""
        return self._in_flight

    def close(self, timeout: float) -> bool:
        """Refuse new accesses and wait for those in flight; True when none is left.

        Blocks: the engine calls it in a worker thread."""
        with self._cond:
            self._closing = True
            return self._cond.wait_for(lambda: self._in_flight == 0, timeout)

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
            return await self._in_thread(rng.region, mapping.read, rng.offset, rng.size)
        return self._guarded(rng.region, mapping.read, rng.offset, rng.size)

    async def hash(self, rng: GuestRange) -> HostHash:
        """The region's own mapping hashed in place; faulted in first where private
        guest_memfd pages can be, so one is an error of the step, not a SIGBUS."""
        placed = self._host_placed(rng)
        addr = placed.mapping.address(rng.offset, rng.size)
        populate = placed.in_place and self._private_mem
        try:
            value = await self._in_thread(
                rng.region, self._hash, rng.region, addr, rng.size, populate
            )
        except OSError as exc:
            raise EngineError(
                f"region {rng.region}: the kernel would not fault [{rng.offset:#x}, "
                f"{rng.offset + rng.size:#x}) in for the host ({exc.strerror}); private "
                "guest_memfd pages are not the host's to read"
            ) from exc
        return HostHash(value, placed.host_view)

    def _hash(self, region: str, addr: int, size: int, populate: bool) -> int:
        """:func:`fasthash.hash_address` in chunks (the hash is a sum of its parts)."""
        hasher, nwords, acc = fasthash.hasher(), size // WORD, 0
        for lo in range(0, nwords, CHUNK // WORD):
            self._check_open(region)
            n = min(CHUNK // WORD, nwords - lo)
            acc = (acc + hasher.memory_acc(addr + lo * WORD, n, lo, populate)) & MASK64
        return finish_hash(acc, nwords)

    async def write(self, rng: GuestRange, data: bytes) -> None:
        if len(data) != rng.size:
            raise EngineError(f"host_write of {len(data)} bytes into a {rng.size}-byte range")
        mapping = self._host_placed(rng).mapping
        if rng.size > _BIG_COPY:
            await self._in_thread(rng.region, self._write, rng.region, mapping, rng.offset, data)
        else:
            self._guarded(rng.region, mapping.write, rng.offset, data)

    def _write(self, region: str, mapping: Mapping, offset: int, data: bytes) -> None:
        view = memoryview(data)
        for lo in range(0, len(data), CHUNK):
            self._check_open(region)
            mapping.write(offset + lo, view[lo : lo + CHUNK])

    def _gmem(self, rng: GuestRange) -> Placed:
        placed = self._placed(rng.region)
        if placed.gmem is None:
            raise UnsupportedStep(
                f"region {rng.region} is backend {placed.region.backend}, not guest_memfd"
            )
        return placed

    async def punch_hole(self, rng: GuestRange) -> None:
        await self._fallocate(rng, GuestMemfd.punch_hole, "punching a hole in", "punch hole")

    async def allocate(self, rng: GuestRange) -> None:
        await self._fallocate(rng, GuestMemfd.allocate, "allocating", "allocate")

    async def _fallocate(
        self,
        rng: GuestRange,
        op: Callable[[GuestMemfd, int, int], None],
        doing: str,
        event: str,
    ) -> None:
        """``op`` (a fallocate of :class:`GuestMemfd`) over ``rng`` in a worker thread; an
        OSError is the step's EngineError ("<doing> region R: ...")."""
        placed = self._gmem(rng)
        assert placed.gmem is not None
        try:
            await self._in_thread(rng.region, op, placed.gmem, rng.offset, rng.size)
        except OSError as exc:
            raise EngineError(f"{doing} region {rng.region}: {exc}") from exc
        self._event(f"{event} {rng.region} {rng.offset:#x}+{rng.size:#x}")
