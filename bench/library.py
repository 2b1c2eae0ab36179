"""The scenario library's ROM-path scenarios on the QEMU engine: KVM against TCG, per scenario.

Why per scenario: a scenario is mostly boot plus a few guest requests, so its time shows
whether KVM buys anything over TCG for the library as a whole; every scenario that passes
under both accelerators and boots the micro guest ROM (microvm) is run --repeat times under
each, interleaved so that load changes hit both alike, and each one's median is compared.

Usage: .venv/bin/python bench/library.py [--repeat N] [--json FILE] [PATHS...]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from pathlib import Path

from jsonout import write_json

from qmpgmem.engines.qemu.argv import boot_kind
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import load_paths
from qmpgmem.session import host_context, run_scenarios

ROOT = Path(__file__).resolve().parents[1]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("paths", nargs="*", default=[str(ROOT / "scenarios")])
    args = ap.parse_args()
    loaded, issues = load_paths(args.paths)
    assert not issues, issues
    rom = [s for s in loaded if boot_kind(s.scenario.vm) == "rom"]
    ctx = await host_context()
    times: dict[str, dict[str, list[float]]] = {}
    for _ in range(args.repeat):
        for accel in ("kvm", "tcg"):
            report = await run_scenarios(rom, ctx, RunOptions(engine="qemu", accel=accel))
            for r in report.results:
                if r.status == "passed":
                    times.setdefault(r.scenario, {}).setdefault(accel, []).append(r.duration_s)
    both = {
        name: {a: statistics.median(v) for a, v in t.items()}
        for name, t in times.items()
        if len(t.get("kvm", [])) == len(t.get("tcg", [])) == args.repeat
    }
    kvm = statistics.mean(t["kvm"] for t in both.values())
    tcg = statistics.mean(t["tcg"] for t in both.values())
    faster = sum(t["kvm"] < t["tcg"] for t in both.values())
    print(f"{len(both)} ROM-path scenarios passed under both, median of {args.repeat} each\n")
    columns = ("scenario", "KVM", "TCG", "TCG/KVM")
    rows = [
        (name, f"{t['kvm']:.3f} s", f"{t['tcg']:.3f} s", f"{t['tcg'] / t['kvm']:.2f}")
        for name, t in sorted(both.items())
    ]
    rows.append(("**mean per scenario**", f"{kvm:.3f} s", f"{tcg:.3f} s", f"{tcg / kvm:.2f}"))
    print("| " + " | ".join(columns) + " |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nKVM faster in {faster} of {len(both)} scenarios")
    if args.json:
        figures = {"per_scenario_s": both, "mean_kvm_s": kvm, "mean_tcg_s": tcg}
        figures["kvm_faster_in"] = faster
        write_json(args.json, "library", figures, rows, columns, repeat=args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
