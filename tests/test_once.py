"""OnceCache: concurrent runs (``run -j``) asking for one host fact share one computation."""

from __future__ import annotations

import asyncio

import pytest

from qmpgmem.once import OnceCache


class Maker:
    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail
        self.release = asyncio.Event()

    async def make(self) -> str:
        self.calls += 1
        await self.release.wait()
        if self.fail:
            raise OSError("the probe failed")
        return f"value {self.calls}"


async def test_concurrent_callers_share_one_computation() -> None:
    cache: OnceCache[str, str] = OnceCache()
    maker = Maker()
    both = asyncio.gather(cache.get("k", maker.make), cache.get("k", maker.make))
    await asyncio.sleep(0)
    maker.release.set()
    assert await both == ["value 1", "value 1"]
    assert maker.calls == 1
    assert await cache.get("k", maker.make) == "value 1"  # remembered
    assert await cache.get("other", maker.make) == "value 2"  # per key


async def test_a_plain_dict_would_compute_twice() -> None:
    """The race OnceCache closes: check-then-await-then-store, as the caches did before."""
    plain: dict[str, str] = {}
    maker = Maker()

    async def get() -> str:
        if "k" not in plain:
            plain["k"] = await maker.make()
        return plain["k"]

    both = asyncio.gather(get(), get())
    await asyncio.sleep(0)
    maker.release.set()
    await both
    assert maker.calls == 2


async def test_one_cancelled_caller_leaves_the_other_its_answer() -> None:
    cache: OnceCache[str, str] = OnceCache()
    maker = Maker()
    first = asyncio.create_task(cache.get("k", maker.make))
    second = asyncio.create_task(cache.get("k", maker.make))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    maker.release.set()
    assert await second == "value 1"
    assert first.cancelled()
    assert maker.calls == 1


async def test_a_failure_is_not_remembered() -> None:
    cache: OnceCache[str, str] = OnceCache()
    failing = Maker(fail=True)
    failing.release.set()
    with pytest.raises(OSError, match="the probe failed"):
        await cache.get("k", failing.make)
    ok = Maker()
    ok.release.set()
    assert await cache.get("k", ok.make) == "value 1"


def test_a_task_of_a_closed_loop_is_not_awaited() -> None:
    cache: OnceCache[str, str] = OnceCache()
    maker = Maker()

    async def interrupted() -> None:
        task = asyncio.create_task(cache.get("k", maker.make))
        await asyncio.sleep(0)
        task.cancel()  # the loop ends with the computation still pending

    asyncio.run(interrupted())
    fresh = Maker()

    async def again() -> str:
        fresh.release.set()
        return await cache.get("k", fresh.make)

    assert asyncio.run(again()) == "value 1"
    assert fresh.calls == 1
