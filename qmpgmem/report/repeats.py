"""The runs of ``qmpgmem run --repeat N`` folded into one result per scenario run.

Why apart from the runner: a run knows only itself; whether a scenario is flaky shows only
across its runs, after they are done (in whatever order an executor ran them). A result whose
runs all ended alike keeps that status; one whose runs differ is ``flaky``. Either way the
folded result lists every run's status and the spread of their durations (``repeats``), and
carries the details (steps, reason, kept artifacts) of the first run that did not pass, the
one worth reading, or else of the first run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from qmpgmem.report.result import Repeats, ScenarioResult, Status

__all__ = ["fold_repeats"]


def _fold(runs: list[ScenarioResult]) -> ScenarioResult:
    runs = sorted(runs, key=lambda r: r.repeat_index or 0)
    statuses = [r.status for r in runs]
    durations = [r.duration_s for r in runs]
    repeats = Repeats(
        runs=len(runs),
        statuses=statuses,
        duration_min_s=min(durations),
        duration_median_s=round(statistics.median(durations), 4),
        duration_max_s=max(durations),
    )
    shown = next((r for r in runs if r.status is not Status.PASSED), runs[0])
    status, reason = shown.status, shown.reason
    if len(set(statuses)) > 1:
        status = Status.FLAKY
        which = (shown.repeat_index or 0) + 1
        reason = f"{repeats.counts()}; run {which} {shown.status}: {shown.reason}".rstrip(": ")
    return shown.model_copy(
        update={
            "status": status,
            "reason": reason,
            "duration_s": repeats.duration_median_s,
            "repeat_index": None,
            "repeats": repeats,
        }
    )


def fold_repeats(results: Sequence[ScenarioResult]) -> list[ScenarioResult]:
    """One result per scenario x engine x binary for the runs of a ``--repeat`` (those with
    a ``repeat_index``), at the place of its first run; other results pass unchanged."""
    groups: dict[tuple[str, str], list[ScenarioResult]] = {}
    order: list[ScenarioResult | tuple[str, str]] = []
    for r in results:
        if r.repeat_index is None:
            order.append(r)
            continue
        key = (r.file, r.id)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(r)
    return [item if isinstance(item, ScenarioResult) else _fold(groups[item]) for item in order]
