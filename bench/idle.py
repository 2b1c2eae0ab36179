"""What an idle VM costs the host: CPU of QEMU (KVM, TCG) and of the kvm engine's vCPU thread
while the guest waits for a request, beside a baseline guest measured in the same run.

The baseline is the micro guest as built from another git revision (by default the one
before the guest learnt to sleep, which polls its UART), so the ratio is "before vs after"
on the same machine at the same moment. CPU comes from /proc/PID/stat (QEMU, all threads)
and /proc/self/task/TID/stat (the kvm engine's vCPU thread), over --seconds of idling after
one PING; each figure is the median of --repeat VMs.

Usage: .venv/bin/python bench/idle.py [--repeat N] [--seconds S] [--baseline-rev REV] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from jsonout import write_json

from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.guest.image import guest_image
from qmpgmem.scenario.model import VmSpec

ROOT = Path(__file__).resolve().parents[1]
#: the last commit whose guest polled COM1 while idle
BASELINE_REV = "95eafb0"
SPEC = VmSpec.model_validate({"memory": [{"id": "m0", "size": "64M"}]})


def cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def build_rom(rev: str, workdir: Path) -> Path:
    """The micro guest ROM of git revision ``rev``, built in ``workdir``."""
    src = workdir / "src"
    src.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "images/microguest"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    build = workdir / "build"
    subprocess.run(
        ["make", "-s", "-C", str(src / "images/microguest"), f"BUILD={build}"],
        check=True,
        capture_output=True,
    )
    return build / "microguest.rom"


async def idle_fraction(stat: Path, seconds: float) -> float:
    before, t0 = cpu_seconds(stat), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(stat) - before) / (time.monotonic() - t0)


async def qemu_idle(rom: Path, accel: str, seconds: float) -> float:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "needs qemu-system-x86_64"
    eng = QemuEngine(SPEC, qemu_binary=qemu, accel=accel, boot_image=rom, boot_timeout=60)
    try:
        await eng.start()
        assert eng.channel is not None and eng.process.proc is not None
        await eng.channel.ping()
        return await idle_fraction(Path(f"/proc/{eng.process.proc.pid}/stat"), seconds)
    finally:
        await eng.stop()


async def kvm_idle(rom: Path, seconds: float) -> float:
    with tempfile.TemporaryDirectory() as run_dir:
        eng = KvmEngine(SPEC, run_dir=Path(run_dir), boot_timeout=30, step_timeout=30, rom=rom)
        try:
            await eng.start()
            assert eng.channel is not None and eng._runner is not None
            await eng.channel.ping()
            tid = eng._runner._thread.native_id
            return await idle_fraction(Path(f"/proc/self/task/{tid}/stat"), seconds)
        finally:
            await eng.stop()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--baseline-rev", default=BASELINE_REV)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        roms = {"now": guest_image("rom"), "baseline": build_rom(args.baseline_rev, Path(tmp))}
        rows = []
        for name, measure in (
            ("QEMU, KVM, microvm ROM (process)", lambda rom: qemu_idle(rom, "kvm", args.seconds)),
            ("QEMU, TCG, microvm ROM (process)", lambda rom: qemu_idle(rom, "tcg", args.seconds)),
            ("kvm engine (vCPU thread)", lambda rom: kvm_idle(rom, args.seconds)),
        ):
            got: dict[str, list[float]] = {"now": [], "baseline": []}
            for _ in range(args.repeat):  # interleaved, so load changes hit both alike
                for which, rom in roms.items():
                    got[which].append(await measure(rom))
            now, base = (statistics.median(got[k]) for k in ("now", "baseline"))
            rows.append((name, now, base))
    print(f"idle {args.seconds:g} s after one PING, median of {args.repeat} VMs each;")
    print(f"baseline: the guest of {args.baseline_rev}\n")
    print("| idle VM | now | baseline | now/baseline |")
    print("|---|---:|---:|---:|")
    for name, now, base in rows:
        ratio = f"{now / base:.3f}" if base else "—"
        print(f"| {name} | {now:.1%} of a core | {base:.1%} of a core | {ratio} |")
    if args.json:
        figures = {name: {"now": now, "baseline": base} for name, now, base in rows}
        table = [(name, f"{now:.1%}", f"{base:.1%}") for name, now, base in rows]
        write_json(
            args.json,
            "idle",
            figures,
            table,
            ("idle VM", "now (of a core)", "baseline (of a core)"),
            seconds=args.seconds,
            baseline_rev=args.baseline_rev,
        )


if __name__ == "__main__":
    asyncio.run(main())
