"""A map from every offset of ``[0, size)`` to a value, stored as maximal runs.

Why runs and not pages: a 2 GiB region is half a million pages but usually a handful of
runs; every operation here costs O(runs), and adjacent runs with equal values are merged so
the number of runs stays the number of distinct stretches a scenario created.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["IntervalMap"]

T = TypeVar("T")


class IntervalMap(Generic[T]):
    """Total map ``[0, size) -> T``; runs are half-open, sorted, and never equal to a neighbour."""

    def __init__(self, size: int, value: T) -> None:
        if size <= 0:
            raise ValueError(f"an interval map needs a positive size, got {size}")
        self.size = size
        self._starts: list[int] = [0]
        self._values: list[T] = [value]

    def __len__(self) -> int:
        """Number of runs."""
        return len(self._starts)

    def copy(self) -> IntervalMap[T]:
        other: IntervalMap[T] = IntervalMap(self.size, self._values[0])
        other._starts = list(self._starts)
        other._values = list(self._values)
        return other

    def runs(self) -> list[tuple[int, int, T]]:
        """All runs as ``(lo, hi, value)``."""
        return list(self.segments(0, self.size))

    def segments(self, lo: int, hi: int) -> Iterator[tuple[int, int, T]]:
        """The runs that meet ``[lo, hi)``, clipped to it, in order."""
        self._check(lo, hi)
        k = bisect_right(self._starts, lo) - 1
        n = len(self._starts)
        while k < n and self._starts[k] < hi:
            end = self._starts[k + 1] if k + 1 < n else self.size
            yield max(self._starts[k], lo), min(end, hi), self._values[k]
            k += 1

    def value_at(self, pos: int) -> T:
        self._check(pos, pos + 1)
        return self._values[bisect_right(self._starts, pos) - 1]

    def assign(self, lo: int, hi: int, value: T) -> None:
        """Set every offset of ``[lo, hi)`` to ``value``."""
        self._check(lo, hi)
        if lo == hi:
            return
        i = self._split(lo)
        j = self._split(hi)
        self._starts[i:j] = [lo]
        self._values[i:j] = [value]
        self._merge_around(i)

    def update(self, lo: int, hi: int, fn: Callable[[T], T]) -> None:
        """Replace each value ``v`` in ``[lo, hi)`` by ``fn(v)``, run by run."""
        for a, b, v in list(self.segments(lo, hi)):
            self.assign(a, b, fn(v))

    # -- internals ---------------------------------------------------------------------------

    def _check(self, lo: int, hi: int) -> None:
        if not 0 <= lo <= hi <= self.size:
            raise ValueError(f"[{lo:#x}, {hi:#x}) is not inside [0, {self.size:#x})")

    def _split(self, pos: int) -> int:
        """Make ``pos`` a run start (unless it is ``size``); return the index of that run."""
        if pos == self.size:
            return len(self._starts)
        k = bisect_right(self._starts, pos) - 1
        if self._starts[k] == pos:
            return k
        self._starts.insert(k + 1, pos)
        self._values.insert(k + 1, self._values[k])
        return k + 1

    def _merge_around(self, i: int) -> None:
        if i + 1 < len(self._starts) and self._values[i + 1] == self._values[i]:
            del self._starts[i + 1]
            del self._values[i + 1]
        if i > 0 and self._values[i - 1] == self._values[i]:
            del self._starts[i]
            del self._values[i]
