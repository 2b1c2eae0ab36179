"""Per-process results computed once per key, shared by the coroutines that ask at once.

Why: the host context (a probe that starts every QEMU binary) and each guest_memfd flavour's
confirmation (a QEMU start) are remembered per process. With runs in progress side by side
(``run -j``) two of them miss the memory at the same moment; a plain dict lets each start its
own QEMU for the same answer. Here the second awaits the first's task instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

__all__ = ["OnceCache"]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class OnceCache(Generic[K, V]):
    """``await cache.get(key, make)``: ``make()``'s result for ``key``, made once.

    The task that makes it is shielded: one awaiter cancelled (its run interrupted) does not
    cancel the others' wait; a failure is not remembered, so the next caller tries again. A
    task left from another (closed) event loop is never awaited.
    """

    def __init__(self) -> None:
        self._done: dict[K, V] = {}
        self._pending: dict[K, asyncio.Task[V]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._done

    def clear(self) -> None:
        self._done.clear()
        self._pending.clear()

    async def get(self, key: K, make: Callable[[], Coroutine[Any, Any, V]]) -> V:
        if key in self._done:
            return self._done[key]
        task = self._pending.get(key)
        if task is None or task.get_loop() is not asyncio.get_running_loop() or task.cancelled():
            task = asyncio.create_task(make())
            self._pending[key] = task
        try:
            value = await asyncio.shield(task)
        finally:
            if task.done() and self._pending.get(key) is task:
                del self._pending[key]
        self._done[key] = value
        return value
