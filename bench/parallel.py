"""The scenario library with -j 1 against -j N (``qmpgmem run -j``) in the same bench run.

Why in one run: the host's load (another build, other test runs) changes by the minute, so
the figure is the ratio of two wall times taken back to back, repeated with the order
alternating (1, N, N, 1, ...) so that a load change hits both alike; each side's median is
compared. The runs share one in-memory history of run durations (qmpgmem/durations.py), so
from the first -j 1 run on, -j N starts the longest runs first, as ``qmpgmem run`` does with
its durations file (``--plan-order``: keep the plan's order, the baseline of that). Every
run's statuses must be the same per scenario and engine whatever -j, or the
bench fails: a parallel run that changes an outcome is a bug, not a speed-up. The load
average before and after is printed and written with the figures.

Usage: .venv/bin/python bench/parallel.py [--repeat N] [--jobs N] [--engine E]... [--qemu BIN]...
       [--json FILE] [PATHS...]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from pathlib import Path

from jsonout import write_json

from qmpgmem.durations import Durations
from qmpgmem.host.requirements import check_requirement_syntax
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import load_paths
from qmpgmem.scheduler import default_budget
from qmpgmem.session import host_context, planned_runs, run_scenarios

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2, help="runs of each -j (default 2)")
    ap.add_argument("--jobs", type=int, default=2, help="the parallel side (default 2)")
    ap.add_argument("--engine", action="append", choices=["qemu", "kvm"])
    ap.add_argument("--qemu", action="append", metavar="BIN")
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--plan-order", action="store_true", help="start the runs in plan order, not longest first"
    )
    ap.add_argument("paths", nargs="*", default=[str(ROOT / "scenarios")])
    args = ap.parse_args()
    loaded, issues = load_paths(args.paths, requirement_check=check_requirement_syntax)
    assert not issues, issues
    engines = args.engine or ["qemu", "kvm"]
    options = [RunOptions(engine=e, artifacts_dir=Path("build/bench-parallel")) for e in engines]
    ctx = await host_context(args.qemu)
    budget = default_budget()
    load_before = load()
    walls: dict[int, list[float]] = {1: [], args.jobs: []}
    statuses: dict[tuple[str, str], set[str]] = {}
    order = [1, args.jobs]
    durations = None if args.plan_order else Durations(None)
    for round_ in range(args.repeat):
        for jobs in order if round_ % 2 == 0 else order[::-1]:
            t0 = time.perf_counter()
            report = await run_scenarios(
                loaded, ctx, options, jobs=jobs, memory_budget=budget, durations=durations
            )
            walls[jobs].append(time.perf_counter() - t0)
            for r in report.results:
                statuses.setdefault((r.scenario, r.engine), set()).add(r.status.value)
    load_after = load()
    differ = {k: v for k, v in statuses.items() if len(v) > 1}
    assert not differ, f"statuses differ between -j 1 and -j {args.jobs}: {differ}"
    serial, parallel = statistics.median(walls[1]), statistics.median(walls[args.jobs])
    counts: dict[str, int] = {}
    for (status,) in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    runs = len(planned_runs(loaded, options))
    print(
        f"{runs} runs ({len(loaded)} scenarios x {', '.join(engines)}): "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        + f"; identical statuses in all {2 * args.repeat} runs; median of {args.repeat} each; "
        + ("plan order; " if args.plan_order else "longest first (after the first -j 1 run); ")
        + f"{sum(r.duration_s for r in report.results):.2f} s of runs, the longest "
        + f"{max(r.duration_s for r in report.results):.2f} s (in the last run); "
        f"{len(os.sched_getaffinity(0))} cores; load {load_before} -> {load_after}\n"
    )
    table = [
        ("wall time, -j 1", f"{serial:.2f} s", "baseline"),
        (
            f"wall time, -j {args.jobs}",
            f"{parallel:.2f} s",
            f"{serial / parallel:.2f}x faster than -j 1",
        ),
    ]
    print("| figure | median | beside the baseline |")
    print("|---|---:|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    if args.json:
        write_json(
            args.json,
            "parallel",
            {
                "wall_s_j1": walls[1],
                f"wall_s_j{args.jobs}": walls[args.jobs],
                "speedup": serial / parallel,
                "runs": runs,
                "statuses": counts,
                "order": "plan" if args.plan_order else "longest first",
            },
            table,
            ("figure", "median", "beside the baseline"),
            load_before=load_before,
            load_after=load_after,
        )


if __name__ == "__main__":
    asyncio.run(main())
