"""How long validating a scenario file takes, by its size; prints a Markdown table.

Each figure is the median of --repeat runs of ``load_scenario`` (read, parse with positions,
pydantic, step lines), beside two baselines measured in the same run on the same text:

- ruamel's round-trip load (``YAML(typ="rt").load``), which the loader used until issue 13
  and which alone took most of its time (60,000 steps: 45 s for the whole validation);
- libyaml's event stream alone, with nothing built from it: the floor for any YAML loader.

Then ``qmpgmem validate`` of the largest file end to end (a process, with start-up), a 50 MiB
description, and the 1 KiB alias bomb (time and peak memory to refuse it).
Targets: 60,000 steps in a few seconds, time per step flat across sizes (linear).

Usage: .venv/bin/python bench/validate.py [--repeat 3] [--steps 6000,20000,60000]
       [--baseline-repeat 1] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jsonout import write_json
from ruamel.yaml import YAML
from ruamel.yaml.events import StreamEndEvent

from qmpgmem.scenario.loader import InvalidScenarioError, load_scenario

try:  # libyaml, when ruamel.yaml.clibz is installed (not by default: docs/performance.md)
    from ruamel.yaml.cyaml import CParser  # type: ignore[attr-defined]
except ImportError:
    CParser = None
EVENTS = "libyaml" if CParser is not None else "ruamel's pure-Python"

REPO = Path(__file__).resolve().parents[1]
SMOKE = (REPO / "scenarios" / "basic" / "smoke.yaml").read_text()


def many_steps(count: int) -> str:
    head = SMOKE.split("steps:")[0]
    step = (
        "  - action: guest.write\n    range: {region: ram0, offset: 1M, size: 4K}\n    seed: %d\n"
    )
    return head + "steps:\n" + "".join(step % i for i in range(count)) + "timeouts:\n  step: 10s\n"


def big_description(mib: int) -> str:
    return SMOKE.replace("description: >\n", "description: >\n  " + "x" * (mib << 20) + "\n", 1)


def billion_laughs() -> str:
    lines = ["a0: &a0 [" + ", ".join(['"' + "lol" * 12 + '"'] * 10) + "]"]
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def median_seconds(run: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def events_only(text: str) -> None:
    if CParser is None:
        for _ in YAML(typ="safe", pure=True).parse(text):
            pass
        return
    parser = CParser(text)
    while type(parser.get_event()) is not StreamEndEvent:
        pass


def rt_load(text: str) -> None:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.load(text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--baseline-repeat", type=int, default=1, help="for ruamel round-trip")
    parser.add_argument("--steps", default="6000,20000,60000")
    parser.add_argument("--description-mib", type=int, default=50)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    sizes = [int(part) for part in args.steps.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="qmpgmem-bench-validate-") as tmp:
        for count in sizes:
            path = Path(tmp) / f"steps-{count}.yaml"
            text = many_steps(count)
            path.write_text(text)
            ours = median_seconds(lambda p=path: load_scenario(p), args.repeat)
            floor = median_seconds(lambda t=text: events_only(t), args.repeat)
            old = median_seconds(lambda t=text: rt_load(t), args.baseline_repeat)
            rows.append(
                {
                    "figure": f"validate {count:,} steps ({len(text) >> 10:,} KiB)",
                    "seconds": ours,
                    "per_step_us": ours / count * 1e6,
                    "ruamel_rt_s": old,
                    "events_s": floor,
                }
            )
        largest = Path(tmp) / f"steps-{sizes[-1]}.yaml"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "qmpgmem", "validate", str(largest)],
            capture_output=True,
            text=True,
        )
        cli_seconds = time.perf_counter() - started
        assert done.returncode == 0, done.stdout + done.stderr
        path = Path(tmp) / "description.yaml"
        text = big_description(args.description_mib)
        path.write_text(text)
        description = median_seconds(lambda: load_scenario(path), args.repeat)
        description_old = median_seconds(lambda: rt_load(text), args.baseline_repeat)
        bomb = Path(tmp) / "bomb.yaml"
        bomb.write_text(billion_laughs())
        tracemalloc.start()
        started = time.perf_counter()
        with contextlib.suppress(InvalidScenarioError):
            load_scenario(bomb)
        bomb_seconds = time.perf_counter() - started
        _, bomb_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

    print("| figure | median | beside the baselines (same run, same text) |")
    print("|---|---:|---|")
    for row in rows:
        print(
            f"| {row['figure']} | {row['seconds']:.2f} s | {row['per_step_us']:.0f} µs/step; "
            f"ruamel round-trip load alone {row['ruamel_rt_s']:.1f} s "
            f"({row['ruamel_rt_s'] / row['seconds']:.1f}x); {EVENTS} events alone "
            f"{row['events_s']:.2f} s ({row['seconds'] / row['events_s']:.1f}x of that) |"
        )
    per_step = [row["per_step_us"] for row in rows]
    print(
        f"| `qmpgmem validate` of {sizes[-1]:,} steps, whole process | {cli_seconds:.2f} s | "
        f"time per step from {sizes[0]:,} to {sizes[-1]:,} steps: "
        f"{per_step[-1] / per_step[0]:.2f}x (1.0 is linear) |"
    )
    print(
        f"| {args.description_mib} MiB description | {description:.2f} s | ruamel round-trip "
        f"load alone {description_old:.1f} s ({description_old / description:.1f}x) |"
    )
    print(
        f"| 1 KiB alias bomb ({len(billion_laughs())} bytes, 10^10 strings) refused | "
        f"{bomb_seconds * 1000:.1f} ms | peak {bomb_peak / 1024:.0f} KiB traced |"
    )
    if args.json:
        figures = {
            "rows": rows,
            "cli_seconds": cli_seconds,
            "description_s": description,
            "description_ruamel_rt_s": description_old,
            "alias_bomb_s": bomb_seconds,
            "alias_bomb_peak_bytes": bomb_peak,
        }
        write_json(args.json, "validate", figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
