"""Planned scenario runs, several at once: at most ``jobs`` in progress and their VMs' memory
within a budget; the results come back in plan order whatever order they finish in.

Why a module of its own: the session decides *what* runs (:func:`qmpgmem.session.planned_runs`),
the runner *how* one run goes; when each starts, how many share the host, and what happens to
the ones in progress when the run is cancelled is this module's alone. Everything runs in one
event loop (the engines' blocking work is in threads already), so the state here needs no lock.

Admission is in a given order (the plan's, or longest first: :mod:`qmpgmem.durations`): the
next run starts when a slot is free, its memory fits what the runs in progress leave of the
budget, and no run in progress uses a host file it names (a ``file`` region at an absolute
path: two runs on one file would refuse or overwrite each other's). A run that needs more
than the whole budget starts when nothing else runs, and so does one that reaches the host in
ways nobody can tell apart (``--allow-unsafe`` with ``qemu_args`` or host-touching QMP
commands); nothing starts beside either. A later run never overtakes a waiting one, so none is
starved and ``-j 1`` in plan order is exactly the plan.

Cancellation (Ctrl-C, SIGTERM, a callback that raised): every run in progress is cancelled
and awaited, so each tears its VM down before the error leaves :func:`run_planned`; the runs
never started are simply not run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qmpgmem.guest import protocol
from qmpgmem.report.result import ScenarioResult
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import LoadedScenario

__all__ = [
    "BUDGET_FRACTION",
    "Demand",
    "OnResult",
    "OnStart",
    "Planned",
    "RunOne",
    "default_budget",
    "default_jobs",
    "demand",
    "memory_need",
    "run_planned",
]

#: One planned run: the scenario and the options (engine, accelerator...) it runs with.
Planned = tuple[LoadedScenario, RunOptions]
#: The part of MemAvailable the default budget allows the VMs of one run.
BUDGET_FRACTION: Final = 0.5
_MEMINFO: Final = Path("/proc/meminfo")

OnStart = Callable[[int, LoadedScenario, RunOptions], None]
OnResult = Callable[[int, ScenarioResult], None]
RunOne = Callable[[LoadedScenario, RunOptions], Awaitable[ScenarioResult]]


def default_jobs() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except OSError:  # pragma: no cover - no affinity syscall
        return max(1, os.cpu_count() or 1)


def mem_available(meminfo: Path = _MEMINFO) -> int | None:
    """MemAvailable in bytes, or None when the kernel does not say."""
    try:
        for line in meminfo.read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "MemAvailable":
                return int(value.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def default_budget(meminfo: Path = _MEMINFO) -> int | None:
    """:data:`BUDGET_FRACTION` of MemAvailable now; None (no bound) when it is unknown."""
    available = mem_available(meminfo)
    return None if available is None else int(available * BUDGET_FRACTION)


def memory_need(loaded: LoadedScenario) -> int:
    """What a run of ``loaded`` takes of the host's memory at most: the guest's own area plus
    every region, each fully populated (the engines' own overhead is small beside it)."""
    return protocol.SYS_SIZE + sum(r.size for r in loaded.scenario.vm.memory)


@dataclass(frozen=True)
class Demand:
    """What one planned run takes of the host while it is in progress."""

    #: bytes of guest memory (:func:`memory_need`)
    memory: int
    #: host files it creates or writes (``file`` regions at absolute paths), normalised
    host_files: frozenset[str] = frozenset()
    #: it may touch the host beyond those files: nothing runs beside it
    alone: bool = False


def demand(loaded: LoadedScenario, opts: RunOptions) -> Demand:
    """:class:`Demand` of running ``loaded`` with ``opts``.

    Without ``--allow-unsafe`` a scenario that reaches the host is refused before its VM
    starts (qmpgmem/policy.py), so only its memory counts.
    """
    files = frozenset(
        os.path.normpath(r.path) for r in loaded.scenario.vm.memory if r.outside_run_dir and r.path
    )
    alone = False
    if opts.allow_unsafe:
        from qmpgmem.policy import unsafe_uses

        uses = unsafe_uses(loaded, opts.engine)
        alone = any(not use.field.startswith("vm.memory[") for use in uses)
    return Demand(memory_need(loaded), files if opts.allow_unsafe else frozenset(), alone)


async def run_planned(
    runs: Sequence[Planned],
    run_one: RunOne,
    *,
    jobs: int = 1,
    budget: int | None = None,
    on_start: OnStart | None = None,
    on_result: OnResult | None = None,
    order: Sequence[int] | None = None,
) -> list[ScenarioResult]:
    """Run every planned run with ``run_one``; their results in the order of ``runs``.

    ``order``: the indices of ``runs`` in the order to start them (None: the plan's).

    ``on_start(index, scenario, options)`` is called as a run starts, ``on_result(index,
    result)`` as it finishes (so in completion order); ``index`` is the run's place in
    ``runs``. ``budget``: bytes of VM memory (:func:`memory_need`) allowed in progress at
    once; None: no bound. Which runs may overlap: :func:`demand`.

    :raise ValueError: ``jobs`` is below 1, ``budget`` below 0, or ``order`` is not a
        permutation of the runs' indices.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if budget is not None and budget < 0:
        raise ValueError(f"the memory budget cannot be negative, got {budget}")
    admission = list(range(len(runs))) if order is None else list(order)
    if sorted(admission) != list(range(len(runs))):
        raise ValueError(f"order must list each of the {len(runs)} runs once, got {admission}")
    demands = [demand(loaded, opts) for loaded, opts in runs]
    results: list[ScenarioResult | None] = [None] * len(runs)
    running: dict[asyncio.Task[ScenarioResult], int] = {}
    following = 0  # the next place in ``admission`` to start

    def fits(want: Demand) -> bool:
        if not running:
            return True  # alone, even when larger than the whole budget
        others = [demands[i] for i in running.values()]
        in_use = sum(d.memory for d in others)
        return (
            len(running) < jobs
            and not want.alone
            and not any(d.alone for d in others)
            and (budget is None or in_use + want.memory <= budget)
            and not any(want.host_files & d.host_files for d in others)
        )

    try:
        while following < len(runs) or running:
            while following < len(runs) and fits(demands[admission[following]]):
                index = admission[following]
                loaded, opts = runs[index]
                following += 1
                if on_start is not None:
                    on_start(index, loaded, opts)
                task = asyncio.ensure_future(run_one(loaded, opts))
                running[task] = index
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in sorted(done, key=running.__getitem__):  # plan order among the done
                index = running.pop(task)
                result = results[index] = task.result()  # a run's bug propagates from here
                if on_result is not None:
                    on_result(index, result)
    finally:
        await _stop(running)
    return [r for r in results if r is not None]


async def _stop(running: dict[asyncio.Task[ScenarioResult], int]) -> None:
    """Cancel the runs still in progress and wait until each has torn its VM down; a second
    cancellation while waiting (a second Ctrl-C) does not cut the teardown short."""
    if not running:
        return
    for task in running:
        task.cancel()
    pending = set(running)
    while pending:
        with contextlib.suppress(asyncio.CancelledError):
            _, pending = await asyncio.wait(pending)
    for task in running:  # retrieve each outcome so none is reported as never retrieved
        if not task.cancelled():
            task.exception()
