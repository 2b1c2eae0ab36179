"""Measurements both benchmark scripts take of a running engine, defined once.

Why shared: the QEMU and the direct KVM engine are compared figure by figure in
docs/performance.md, so each figure must mean the same thing on both.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator

from qmpgmem.engines.base import Engine, GuestRange
from qmpgmem.guest import protocol
from qmpgmem.guest.mailbox import Mailbox


@contextlib.contextmanager
def hello_over_serial() -> Iterator[None]:
    """Engines started inside do not offer the mailbox for the HELLO, so the guest says it
    on COM1 as it did before issue 15 (the baseline of the mailbox HELLO, same guest)."""
    saved = Mailbox.offer_hello
    Mailbox.offer_hello = lambda self, host_flags=0: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Mailbox.offer_hello = saved  # type: ignore[method-assign]


@contextlib.contextmanager
def machine_default_firmware() -> Iterator[None]:
    """QEMU engines started inside boot the PVH image through the machine's default
    firmware, not qboot (microvm's default on Debian is a SeaBIOS build): the baseline of
    the qboot boot."""
    from qmpgmem.engines.qemu import engine

    saved = engine.pvh_firmware
    engine.pvh_firmware = lambda vm, firmware: None  # type: ignore[assignment]
    try:
        yield
    finally:
        engine.pvh_firmware = saved


async def median_latency(call: Callable[[], Awaitable[object]], n: int) -> float:
    """Median seconds of ``n`` sequential awaits of ``call()``."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def memory_figures(eng: Engine, rng: GuestRange, n: int) -> dict[str, float]:
    """Median seconds of a guest WRITE, a guest HASH and a host read of ``rng``, ``n`` times.

    Every pass checks the guest's hash against the pattern and the host's bytes against the
    guest's hash; the host read (``host_read``: pmemsave, a copy) is timed without the host's
    hashing; ``host_hash`` (what host.read does: in place where the engine can) is timed
    with it, after one untimed call that maps and faults the range in.
    """
    writes, hashes, reads, in_place = [], [], [], []
    for seed in range(n):
        t0 = time.perf_counter()
        await eng.guest_write(rng, seed)
        writes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        got = await eng.guest_hash(rng)
        hashes.append(time.perf_counter() - t0)
        assert got == protocol.pattern_hash(seed, rng.offset, rng.size), "guest hash mismatch"
        t0 = time.perf_counter()
        data = await eng.host_read(rng)
        reads.append(time.perf_counter() - t0)
        assert protocol.hash_bytes(data) == got, "host and guest disagree"
        if seed == 0:
            await eng.host_hash(rng)
        t0 = time.perf_counter()
        seen = await eng.host_hash(rng)
        in_place.append(time.perf_counter() - t0)
        assert seen.value == got, f"host ({seen.via}) and guest disagree"
    return {
        "write_s": statistics.median(writes),
        "hash_s": statistics.median(hashes),
        "host_read_s": statistics.median(reads),
        "host_hash_s": statistics.median(in_place),
    }
