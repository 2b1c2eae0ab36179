"""10,000 mutated scenario files through the loader and through ``qmpgmem validate``.

The library's scenarios (as YAML and as JSON) get 1 to 3 mutations each (bytes, lines, keys,
values: tests/scenario/mutate.py), seeded, so a run can be repeated. Two passes:

- in process, file by file (``load_scenario``): valid, or rejected with issues that all carry
  FILE:LINE; the slowest file and the peak memory of one file (tracemalloc);
- ``qmpgmem validate DIR`` on batches of --batch files (not one process per file): its exit
  status (2 when the batch holds a rejected file, else 0), no traceback, no hang (--timeout per
  batch), and each file the first pass rejected printed as FILE:LINE:COL.

Usage: .venv/bin/python bench/mutants.py [--count 10000] [--seed 13] [--batch 500] [--json FILE]
Exits 1 when any count that must be 0 is not.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qmpgmem.host.requirements import check_requirement_syntax
from qmpgmem.scenario.loader import InvalidScenarioError, load_scenario
from tests.scenario.mutate import RandomChooser, mutate, shipped_scenarios

#: FILE:LINE:COL: at the start of an output line of validate.
_LOCATED = re.compile(r"^(?P<file>/[^:\n]+):(?P<line>\d+):(?P<col>\d+): ", re.MULTILINE)


def make_mutants(root: Path, count: int, seed: int, batch: int) -> list[list[Path]]:
    sources = shipped_scenarios()
    donors = [text.encode() for _, text in sources]
    chooser = RandomChooser(random.Random(seed))
    batches: list[list[Path]] = []
    for index in range(count):
        if index % batch == 0:
            (root / f"batch-{len(batches):03}").mkdir()
            batches.append([])
        name, text = sources[chooser.integer(0, len(sources) - 1)]
        path = root / f"batch-{len(batches) - 1:03}" / f"{index:05}-{name}"
        path.write_bytes(mutate(text.encode(), chooser, donors))
        batches[-1].append(path)
    return batches


def in_process(paths: list[Path]) -> dict[str, Any]:
    counts: Counter[str] = Counter()
    issue_types: Counter[str] = Counter()
    rejected: set[Path] = set()
    slowest = (0.0, "")
    peak_memory = (0, "")
    for path in paths:
        tracemalloc.start()
        started = time.perf_counter()
        try:
            load_scenario(path, requirement_check=check_requirement_syntax)
            counts["valid"] += 1
        except InvalidScenarioError as exc:
            rejected.add(path)
            issue_types.update(issue.type for issue in exc.issues)
            if not exc.issues or any(i.line is None for i in exc.issues):
                counts["rejected without FILE:LINE"] += 1
            elif any(i.type == "internal" for i in exc.issues):
                counts["internal errors"] += 1
            else:
                counts["rejected at FILE:LINE"] += 1
        except Exception as exc:  # what must never happen
            counts["tracebacks"] += 1
            print(f"{path}: {type(exc).__name__}: {exc}", file=sys.stderr)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        slowest = max(slowest, (elapsed, path.name))
        peak_memory = max(peak_memory, (peak, path.name))
    return {
        "counts": counts,
        "issue_types": issue_types,
        "rejected": rejected,
        "slowest": slowest,
        "peak_memory": peak_memory,
    }


def through_validate(
    batches: list[list[Path]], rejected: set[Path], timeout: float
) -> Counter[str]:
    counts: Counter[str] = Counter()
    for batch in batches:
        directory = batch[0].parent
        started = time.perf_counter()
        try:
            result = subprocess.run(
                [sys.executable, "-m", "qmpgmem", "validate", str(directory)],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            counts["batches that hung"] += 1
            continue
        counts["batch seconds (sum)"] += round(time.perf_counter() - started)
        counts["batches"] += 1
        if "Traceback" in result.stderr or "Traceback" in result.stdout:
            counts["batches with a traceback"] += 1
            print(result.stderr[-2000:], file=sys.stderr)
        if "internal error while loading" in result.stdout:
            counts["internal errors"] += result.stdout.count("internal error while loading")
        expected = 2 if rejected & set(batch) else 0
        if result.returncode != expected:
            counts[f"batches with exit {result.returncode}, not {expected}"] += 1
        located = {Path(m["file"]) for m in _LOCATED.finditer(result.stdout)}
        for path in batch:
            if path in rejected:
                key = (
                    "rejected, exit 2 with FILE:LINE"
                    if path in located
                    else "rejected, no FILE:LINE"
                )
                counts[key] += 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per batch")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qmpgmem-mutants-") as tmp:
        started = time.perf_counter()
        batches = make_mutants(Path(tmp), args.count, args.seed, args.batch)
        paths = [path for batch in batches for path in batch]
        first = in_process(paths)
        loader_seconds = time.perf_counter() - started
        second = through_validate(batches, first["rejected"], args.timeout)
    counts: Counter[str] = first["counts"]
    print(f"## {args.count} mutated scenario files (seed {args.seed}, {len(batches)} batches)\n")
    print("| count | value |\n|---|---:|")
    for key in (
        "valid",
        "rejected at FILE:LINE",
        "rejected without FILE:LINE",
        "internal errors",
        "tracebacks",
    ):
        print(f"| in process: {key} | {counts[key]} |")
    slowest, slowest_name = first["slowest"]
    peak, peak_name = first["peak_memory"]
    print(f"| in process: slowest file | {slowest * 1000:.1f} ms ({slowest_name}) |")
    print(f"| in process: most memory for one file | {peak / (1 << 20):.1f} MiB ({peak_name}) |")
    print(f"| in process: seconds for all (with tracemalloc) | {loader_seconds:.1f} |")
    for key, value in sorted(second.items()):
        print(f"| validate: {key} | {value} |")
    print("\nissue types:", ", ".join(f"{k} {v}" for k, v in first["issue_types"].most_common()))
    bad = (
        counts["tracebacks"]
        + counts["internal errors"]
        + counts["rejected without FILE:LINE"]
        + second["batches that hung"]
        + second["batches with a traceback"]
        + second["internal errors"]
        + second["rejected, no FILE:LINE"]
        + sum(v for k, v in second.items() if k.startswith("batches with exit"))
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "count": args.count,
                    "seed": args.seed,
                    "in_process": dict(counts),
                    "slowest_file_s": slowest,
                    "peak_memory_bytes": peak,
                    "validate": dict(second),
                    "issue_types": dict(first["issue_types"]),
                },
                indent=2,
            )
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
