"""Shrink a failing scenario to a small one that still fails the same way.

Why delta debugging and then field by field: most steps of a random scenario have nothing to
do with a mismatch, and ddmin (Zeller and Hildebrandt, "Simplifying and Isolating
Failure-Inducing Input") removes them in O(n log n) runs when they come in blocks. What is
left is then simplified in place: explicit expectations handed back to the model (first, so
that a removed write cannot leave a stale ``{pattern: N}`` behind that fails for another
reason), ranges moved together towards offset 0, made equal to each other and cut to a word or
a page, unused regions dropped and the rest cut to what the steps touch, seeds renumbered
1, 2, ... Each candidate is validated as a scenario, checked by ``valid`` (no guest step while
paused, ...), and run; it is kept only when ``still_fails`` says it fails the same way — the
caller decides what that means (:func:`mark_step` lets it follow the failing step by name).
Passes repeat until a round keeps nothing or the run budget is spent. A kept candidate must
lower a cost (steps, regions, explicit expectations, bytes, seeds: compared in that order), so
the passes cannot go round in circles, and the result is 1-minimal in steps whenever the
budget allowed a full round.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from qmpgmem.scenario.model import PAGE_SIZE, Scenario

__all__ = ["DEFAULT_MAX_RUNS", "FAILING_STEP", "ShrinkResult", "Shrinker", "mark_step"]

log = logging.getLogger(__name__)

DEFAULT_MAX_RUNS: Final = 200
WORD: Final = 8
_PAGE_ACTIONS: Final = frozenset({"guest.convert", "host.gmem_punch_hole", "host.gmem_allocate"})
_CHECK_ACTIONS: Final = frozenset({"guest.verify", "host.read"})

#: The name :func:`mark_step` gives the step that failed, so later runs can tell it apart.
FAILING_STEP: Final = "the step that failed"

StillFails = Callable[[Scenario], Awaitable[bool]]
Valid = Callable[[Scenario], bool]


@dataclass(frozen=True)
class ShrinkResult:
    scenario: Scenario
    #: Candidates run (each one VM).
    runs: int
    #: Candidates kept (each smaller than the one before).
    accepted: int
    #: The budget ran out before a round kept nothing.
    exhausted: bool


class _BudgetSpent(Exception):
    """Internal: the run budget is spent; the shrinker returns what it has."""


class Shrinker:
    """Shrinks one scenario; ``on_accept`` sees every candidate kept (for progress); region
    sizes stay multiples of ``region_granule``."""

    def __init__(
        self,
        still_fails: StillFails,
        valid: Valid = lambda _: True,
        max_runs: int = DEFAULT_MAX_RUNS,
        on_accept: Callable[[Scenario], None] | None = None,
        region_granule: int = PAGE_SIZE,
    ) -> None:
        self.still_fails = still_fails
        self.region_granule = region_granule
        self.valid = valid
        self.max_runs = max_runs
        self.on_accept = on_accept
        self.runs = 0
        self.accepted = 0
        self._rejected: set[str] = set()

    async def shrink(self, scenario: Scenario) -> ShrinkResult:
        """The smallest scenario found that still fails like ``scenario`` (assumed failing)."""
        current = scenario
        exhausted = False
        try:
            while True:
                before = self.accepted
                for step in (
                    self._expectations,
                    self._steps,
                    self._ranges,
                    self._regions,
                    self._seeds,
                ):
                    current = await step(current)
                if self.accepted == before:
                    break
        except _BudgetSpent as spent:
            current = spent.args[0]
            exhausted = True
        return ShrinkResult(current, self.runs, self.accepted, exhausted)

    # -- the candidate test ------------------------------------------------------------------
    async def _try(self, current: Scenario, data: dict[str, Any]) -> Scenario | None:
        """The candidate built from ``data`` if it is valid and still fails, else None."""
        try:
            candidate = Scenario.model_validate(data)
        except ValidationError:
            return None
        if not _cost(candidate) < _cost(current) or not self.valid(candidate):
            return None
        key = candidate.model_dump_json()
        if key in self._rejected:
            return None
        if self.runs >= self.max_runs:
            raise _BudgetSpent(current)
        self.runs += 1
        if await self.still_fails(candidate):
            self.accepted += 1
            log.debug("kept a candidate of %d steps", len(candidate.steps))
            if self.on_accept is not None:
                self.on_accept(candidate)
            return candidate
        self._rejected.add(key)
        return None

    # -- passes ------------------------------------------------------------------------------
    async def _steps(self, current: Scenario) -> Scenario:
        """ddmin over the steps: remove chunks, halving the chunk size when none can go."""
        chunks = 2
        while len(current.steps) >= 2:
            steps = _dump(current)["steps"]
            size = -(-len(steps) // chunks)
            for start in range(0, len(steps), size):
                data = _dump(current)
                data["steps"] = steps[:start] + steps[start + size :]
                kept = await self._try(current, data)
                if kept is not None:
                    current = kept
                    chunks = max(chunks - 1, 2)
                    break
            else:
                if chunks >= len(steps):
                    break
                chunks = min(2 * chunks, len(steps))
        return current

    async def _expectations(self, current: Scenario) -> Scenario:
        """Hand explicit expectations back to the model: all at once, then one by one."""
        explicit = [
            i
            for i, step in enumerate(current.steps)
            if step.action in _CHECK_ACTIONS and getattr(step, "expect", None) is not None
        ]
        if not explicit:
            return current
        for group in ([*explicit], *([i] for i in explicit)):
            data = _dump(current)
            for i in group:
                if i < len(data["steps"]):
                    data["steps"][i]["expect"] = None
            current = await self._try(current, data) or current
        return current

    async def _ranges(self, current: Scenario) -> Scenario:
        """Shift each region's ranges together towards 0, give a range the range of another
        step, move ranges to offset 0, cut them to a word (a page), halve them; steps over
        the same range change together first (a write and its verify), then each alone."""
        progress = True
        while progress:
            progress = False
            for region in current.vm.memory:
                data = _dump(current)
                if _translate(data, region.id):
                    kept = await self._try(current, data)
                    if kept is not None:
                        current, progress = kept, True
            for i, j in _range_pairs(current):
                data = _dump(current)
                if _adopt(data, i, j):
                    kept = await self._try(current, data)
                    if kept is not None:
                        current, progress = kept, True
            for group in _range_groups(current):
                for change in (_to_zero, _to_min, _halve, _halve_offset):
                    while True:
                        data = _dump(current)
                        if not _apply(data, group, change):
                            break
                        kept = await self._try(current, data)
                        if kept is None:
                            break
                        current, progress = kept, True
                        if change in (_to_zero, _to_min):
                            break
        return current

    async def _regions(self, current: Scenario) -> Scenario:
        """Drop regions no step names; cut the others to the pages the steps touch."""
        used = {s.range.region for s in current.steps if hasattr(s, "range")}
        unused = [r.id for r in current.vm.memory if r.id not in used]
        if unused:
            data = _dump(current)
            data["vm"]["memory"] = [r for r in data["vm"]["memory"] if r["id"] in used]
            current = await self._try(current, data) or current
        for index, region in enumerate(current.vm.memory):
            ends = [
                s.range.end
                for s in current.steps
                if hasattr(s, "range") and s.range.region == region.id
            ]
            if not ends:
                continue
            granule = self.region_granule
            needed = -(-max(ends) // granule) * granule
            if needed < region.size:
                data = _dump(current)
                data["vm"]["memory"][index]["size"] = needed
                current = await self._try(current, data) or current
        return current

    async def _seeds(self, current: Scenario) -> Scenario:
        """Renumber seeds 1, 2, ... in order of first use (the same seed keeps one number)."""
        data = _dump(current)
        numbers: dict[int, int] = {}
        for step in data["steps"]:
            if "seed" in step:
                step["seed"] = numbers.setdefault(step["seed"], len(numbers) + 1)
        return await self._try(current, data) or current


# -- helpers -----------------------------------------------------------------------------------


def _cost(scenario: Scenario) -> tuple[int, int, int, int, int]:
    """What every kept candidate must lower (compared in order), so shrinking ends: steps,
    regions, explicit expectations, bytes (range sizes, offsets, region sizes), seeds."""
    ranges = [s.range for s in scenario.steps if hasattr(s, "range")]
    explicit = sum(
        1
        for s in scenario.steps
        if s.action in _CHECK_ACTIONS and getattr(s, "expect", None) is not None
    )
    size = sum(r.offset + r.size for r in ranges) + sum(r.size for r in scenario.vm.memory)
    seeds = sum(getattr(s, "seed", 0) for s in scenario.steps)
    return len(scenario.steps), len(scenario.vm.memory), explicit, size, seeds


def _dump(scenario: Scenario) -> dict[str, Any]:
    """A plain-data copy of ``scenario`` that :meth:`Scenario.model_validate` takes back."""
    return scenario.model_dump(by_alias=True)


def _range_groups(scenario: Scenario) -> list[list[int]]:
    """Indices of range steps: those sharing one range together, then each on its own."""
    by_range: dict[tuple[str, int, int], list[int]] = {}
    for i, step in enumerate(scenario.steps):
        rng = getattr(step, "range", None)
        if rng is not None:
            by_range.setdefault((rng.region, rng.offset, rng.size), []).append(i)
    shared = [group for group in by_range.values() if len(group) > 1]
    singles = [[i] for group in by_range.values() for i in group]
    return shared + singles


def _range_pairs(scenario: Scenario) -> list[tuple[int, int]]:
    """(i, j) for range steps i != j on one region whose ranges differ."""
    ranges = [(i, getattr(s, "range", None)) for i, s in enumerate(scenario.steps)]
    with_range = [(i, r) for i, r in ranges if r is not None]
    return [
        (i, j)
        for i, a in with_range
        for j, b in with_range
        if i != j and a.region == b.region and a != b
    ]


def _align_of(step: dict[str, Any]) -> int:
    return PAGE_SIZE if step["action"] in _PAGE_ACTIONS else WORD


def _adopt(data: dict[str, Any], i: int, j: int) -> bool:
    """Give step ``i`` the range of step ``j`` (widened to ``i``'s alignment)."""
    target, source = data["steps"][i]["range"], data["steps"][j]["range"]
    align = _align_of(data["steps"][i])
    lo = source["offset"] // align * align
    hi = -(-(source["offset"] + source["size"]) // align) * align
    if (lo, hi - lo) == (target["offset"], target["size"]):
        return False
    target["offset"], target["size"] = lo, hi - lo
    return True


def _translate(data: dict[str, Any], region: str) -> bool:
    """Shift every range of ``region`` down by the same amount, the lowest to (near) 0."""
    steps = [s for s in data["steps"] if "range" in s and s["range"]["region"] == region]
    if not steps:
        return False
    align = max(_align_of(s) for s in steps)
    delta = min(s["range"]["offset"] for s in steps) // align * align
    if delta == 0:
        return False
    for step in steps:
        step["range"]["offset"] -= delta
    return True


def mark_step(scenario: Scenario, index: int, name: str = FAILING_STEP) -> Scenario:
    """``scenario`` with step ``index`` (0-based) named ``name``.

    Why: "fails the same way" must mean the same step fails; removing a write can make some
    other step fail first with the same action, and only a name survives the shrinking.
    """
    steps = list(scenario.steps)
    steps[index] = steps[index].model_copy(update={"name": name})
    return scenario.model_copy(update={"steps": steps})


def _apply(
    data: dict[str, Any], group: Iterable[int], change: Callable[[int, int, int], tuple[int, int]]
) -> bool:
    """Apply ``change(offset, size, align)`` to the ranges of ``group``; False if none moved."""
    changed = False
    for i in group:
        step = data["steps"][i]
        rng = step["range"]
        align = _align_of(step)
        offset, size = change(rng["offset"], rng["size"], align)
        if (offset, size) != (rng["offset"], rng["size"]):
            rng["offset"], rng["size"] = offset, size
            changed = True
    return changed


def _to_zero(offset: int, size: int, align: int) -> tuple[int, int]:
    return 0, size


def _to_min(offset: int, size: int, align: int) -> tuple[int, int]:
    return offset, align


def _halve(offset: int, size: int, align: int) -> tuple[int, int]:
    return offset, max(align, size // 2 // align * align)


def _halve_offset(offset: int, size: int, align: int) -> tuple[int, int]:
    return offset // 2 // align * align, size
