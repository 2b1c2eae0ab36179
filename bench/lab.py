"""Benchmarks of the lab: L1 boot, the lab conversion tier, the kernel build; each beside the
same work on the host, measured in the same run.

- L1 boot → job start (QEMU TCG, -cpu max, the lab kernel and initramfs), median of --repeat,
  beside the host's own QEMU starting the micro guest (QEMU start → HELLO, KVM).
- The lab tier's scenarios (scenarios/conversion + scenarios/kernel on the kvm engine inside
  L1, boot to poweroff), beside the same command on the host (where the conversions skip).
- The kernel build and the selftest build, from the cache entry's record (measured when it
  was built), beside the host's build of the micro guest (seconds, same compiler).
Usage: .venv/bin/python bench/lab.py [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from jsonout import write_json

from qmpgmem.lab.build import find_kernel
from qmpgmem.lab.machine import LabConfig, LabMachine

ROOT = Path(__file__).resolve().parents[1]
TIER = ["scenarios/conversion", "scenarios/kernel"]


def l1_boot(config: LabConfig) -> float:
    with LabMachine(config) as machine:
        outcome = machine.run("true\n", lambda kind, line: None)
    assert outcome.rc == 0 and outcome.boot_seconds is not None
    return outcome.boot_seconds


def host_boot() -> float:
    sys.path.insert(0, str(ROOT / "bench"))
    from run_all import boot_time

    return asyncio.run(boot_time("kvm"))


def timed(argv: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    return time.perf_counter() - t0, done.returncode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    kernel = find_kernel()
    assert kernel is not None, "no lab kernel: run qmpgmem lab kernel first"
    config = LabConfig(kernel=kernel)
    q = [sys.executable, "-m", "qmpgmem"]
    r: dict[str, Any] = {"kernel": kernel.release}
    r["l1_boot_s"] = statistics.median(l1_boot(config) for _ in range(args.repeat))
    r["host_boot_s"] = statistics.median(host_boot() for _ in range(args.repeat))
    r["lab_tier_s"], rc = timed([*q, "lab", "run", "--engine", "kvm", *TIER])
    assert rc == 0, "the lab tier did not pass"
    r["host_tier_s"], _ = timed([*q, "run", "--engine", "kvm", *TIER])
    with tempfile.TemporaryDirectory() as build:
        t0 = time.perf_counter()
        make = ["make", "-s", "-C", str(ROOT / "images/microguest"), f"BUILD={build}"]
        subprocess.run(make, check=True, capture_output=True)
        r["microguest_build_s"] = time.perf_counter() - t0
    r["kernel_build_s"] = kernel.build_seconds
    r["selftest_build_s"] = kernel.selftest_build_seconds
    rows = [
        ("L1 boot → job start (TCG, -cpu max)", f"{r['l1_boot_s']:.2f} s",
         f"host QEMU start → HELLO {r['host_boot_s'] * 1e3:.0f} ms "
         f"({r['l1_boot_s'] / r['host_boot_s']:.0f}x)"),
        ("lab tier: conversion + kernel scenarios, kvm engine in L1", f"{r['lab_tier_s']:.1f} s",
         f"same command on the host {r['host_tier_s']:.1f} s (conversions skip there)"),
        (f"lab kernel build ({kernel.package} {kernel.version})", f"{r['kernel_build_s']:.0f} s",
         f"selftests {r['selftest_build_s']:.0f} s; micro guest {r['microguest_build_s']:.2f} s"),
    ]  # fmt: skip
    print("| figure | value | beside |\n|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        write_json(args.json, "lab", r, rows, ("figure", "value", "beside"), repeat=args.repeat)


if __name__ == "__main__":
    main()
