"""IntervalMap: splitting, merging, clipping, and agreement with a plain list per offset."""

from __future__ import annotations

import itertools
import random

import pytest

from qmpgmem.model.intervals import IntervalMap


def runs(m: IntervalMap[str]) -> list[tuple[int, int, str]]:
    return m.runs()


@pytest.mark.parametrize(
    ("assigns", "expected"),
    [
        # nothing assigned: one run
        ([], [(0, 100, "a")]),
        # a hole in the middle splits into three
        ([(10, 20, "b")], [(0, 10, "a"), (10, 20, "b"), (20, 100, "a")]),
        # at the start and at the end
        ([(0, 10, "b")], [(0, 10, "b"), (10, 100, "a")]),
        ([(90, 100, "b")], [(0, 90, "a"), (90, 100, "b")]),
        # the whole map
        ([(0, 100, "b")], [(0, 100, "b")]),
        # putting the old value back merges all three runs
        ([(10, 20, "b"), (10, 20, "a")], [(0, 100, "a")]),
        # adjacent equal assignments merge
        ([(10, 20, "b"), (20, 30, "b")], [(0, 10, "a"), (10, 30, "b"), (30, 100, "a")]),
        ([(20, 30, "b"), (10, 20, "b")], [(0, 10, "a"), (10, 30, "b"), (30, 100, "a")]),
        # an assignment spanning several runs replaces them
        (
            [(10, 20, "b"), (30, 40, "c"), (15, 35, "d")],
            [(0, 10, "a"), (10, 15, "b"), (15, 35, "d"), (35, 40, "c"), (40, 100, "a")],
        ),
        # bridging two equal runs merges into one
        (
            [(10, 20, "b"), (30, 40, "b"), (20, 30, "b")],
            [(0, 10, "a"), (10, 40, "b"), (40, 100, "a")],
        ),
        # empty assignment is a no-op
        ([(50, 50, "b")], [(0, 100, "a")]),
    ],
)
def test_assign_splits_and_merges(
    assigns: list[tuple[int, int, str]], expected: list[tuple[int, int, str]]
) -> None:
    m = IntervalMap(100, "a")
    for lo, hi, v in assigns:
        m.assign(lo, hi, v)
    assert runs(m) == expected
    assert len(m) == len(expected)


def test_segments_are_clipped_to_the_query() -> None:
    m = IntervalMap(100, "a")
    m.assign(10, 20, "b")
    assert list(m.segments(5, 15)) == [(5, 10, "a"), (10, 15, "b")]
    assert list(m.segments(12, 18)) == [(12, 18, "b")]
    assert list(m.segments(20, 20)) == []
    assert m.value_at(10) == "b"
    assert m.value_at(20) == "a"


def test_update_maps_each_run() -> None:
    m = IntervalMap(100, 1)
    m.assign(10, 20, 2)
    m.update(15, 50, lambda v: v * 10)
    assert m.runs() == [(0, 10, 1), (10, 15, 2), (15, 20, 20), (20, 50, 10), (50, 100, 1)]


def test_copy_is_independent() -> None:
    m = IntervalMap(10, "a")
    c = m.copy()
    c.assign(0, 5, "b")
    assert m.runs() == [(0, 10, "a")]
    assert c.runs() == [(0, 5, "b"), (5, 10, "a")]


@pytest.mark.parametrize(("lo", "hi"), [(-1, 5), (5, 4), (0, 101), (100, 101)])
def test_out_of_range_is_rejected(lo: int, hi: int) -> None:
    m = IntervalMap(100, "a")
    with pytest.raises(ValueError):
        m.assign(lo, hi, "b")
    with pytest.raises(ValueError):
        list(m.segments(lo, hi))


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        IntervalMap(0, "a")


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_assignments_match_a_list(seed: int) -> None:
    rng = random.Random(seed)
    size = 64
    m = IntervalMap(size, 0)
    ref = [0] * size
    for _ in range(400):
        lo = rng.randrange(size + 1)
        hi = rng.randrange(lo, size + 1)
        v = rng.randrange(4)
        m.assign(lo, hi, v)
        ref[lo:hi] = [v] * (hi - lo)
        flat = [v for a, b, v in m.runs() for _ in range(a, b)]
        assert flat == ref
        # maximal runs: no two neighbours are equal, and they tile [0, size)
        rs = m.runs()
        assert rs[0][0] == 0 and rs[-1][1] == size
        assert all(x[1] == y[0] and x[2] != y[2] for x, y in itertools.pairwise(rs))
