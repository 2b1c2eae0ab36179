"""Benchmarks of the direct KVM engine; prints a Markdown table of medians.

Measures, each the median of --repeat runs: engine start() to the guest's HELLO (KVM fds,
memslots, vCPU 0 at the ROM's 64-bit CPL3 entry; beside it, interleaved, the same boot from
the reset vector), a PING round trip through the mailbox (beside it over the emulated COM1),
and — with the real micro guest — a guest WRITE and HASH of 64 MiB of guest_memfd memory and
the host reading the same 64 MiB through the guest_memfd mapping (on a memfd region, and
said so, where the host's KVM has no guest_memfd with MMAP and INIT_SHARED).

The start figure also stands beside the engine of another git revision (``--baseline-rev``,
by default the one before issue 15's start work: bench/kvm_start.py), booted in a child
process alternately with this one, and is split into phases from both engines' event logs.

Usage: .venv/bin/python bench/kvm_engine.py [--repeat N] [--rom FILE] [--json FILE]
[--baseline-rev REV | --no-baseline]
(--rom runs another 64 KiB ROM that speaks the guest protocol, e.g. a test ROM; the
memory figures then need its WRITE/HASH support.)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from figures import hello_over_serial, median_latency, memory_figures
from jsonout import write_json
from kvm_start import BASELINE_REV, FINE_PHASES, PHASES, Baseline, medians, phases

from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.host.facts import HostFacts
from qmpgmem.host.kernel import probe_kvm
from qmpgmem.host.requirements import evaluate_requirements
from qmpgmem.scenario.model import VmSpec

MiB = 1 << 20
#: Why this host cannot give the region a guest_memfd with MMAP and INIT_SHARED (None: it can);
#: the figures are then taken on a memfd region and named so (6.18.44-fc has no guest_memfd).
NO_GMEM = evaluate_requirements(
    ["guest_memfd", "guest_memfd_mmap", "guest_memfd_init_shared"], HostFacts(kvm=probe_kvm())
)
BACKEND = "memfd" if NO_GMEM else "guest_memfd"
MEMORY = [{"id": "g0", "size": "64M", "backend": BACKEND}]
SPEC = VmSpec.model_validate({"memory": MEMORY})
#: the same VM started from the ROM's reset vector: the baseline of the direct CPL3 entry
SPEC_ROM = VmSpec.model_validate({"memory": MEMORY, "guest": {"boot": "rom"}})


def make(rom: bytes | None, run_dir: Path, spec: VmSpec = SPEC) -> KvmEngine:
    return KvmEngine(spec, run_dir=run_dir, boot_timeout=30, step_timeout=60, rom=rom)


async def boot(rom: bytes | None, run_dir: Path, spec: VmSpec = SPEC) -> tuple[float, str]:
    """start() -> HELLO in seconds, and the engine's event log of that boot."""
    eng = make(rom, run_dir, spec)
    try:
        await eng.start()
        assert eng.ready_after is not None
    finally:
        await eng.stop()
    return eng.ready_after, (run_dir / "kvm.log").read_text()


async def in_vm(rom: bytes | None, run_dir: Path, n: int, memory: bool) -> dict[str, float]:
    eng = make(rom, run_dir)
    out: dict[str, float] = {}
    try:
        await eng.start()
        channel = eng.channel
        assert channel is not None
        out["ping round trip (ms)"] = await median_latency(channel.ping, max(n, 50)) * 1e3
        with channel.over_serial():  # the same guest over COM1: the mailbox's baseline
            out["ping over COM1 (ms)"] = await median_latency(channel.ping, max(n, 50)) * 1e3
        if memory:
            m = await memory_figures(eng, eng.resolve("g0", 0, 64 * MiB), n)
            out["guest WRITE 64 MiB (ms)"] = m["write_s"] * 1e3
            out["guest HASH 64 MiB (ms)"] = m["hash_s"] * 1e3
            via = "gmem mmap" if BACKEND == "guest_memfd" else "the memfd mapping"
            out[f"host read 64 MiB via {via} (ms)"] = m["host_read_s"] * 1e3
            out["host read 64 MiB in place, hashed (ms)"] = m["host_hash_s"] * 1e3
    finally:
        await eng.stop()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--rom", type=Path, help="a 64 KiB ROM instead of the micro guest")
    ap.add_argument("--no-memory", action="store_true", help="skip the 64 MiB figures")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--baseline-rev", default=BASELINE_REV, help="the old engine's revision")
    ap.add_argument("--no-baseline", action="store_true", help="no old engine beside it")
    args = ap.parse_args()
    rom = args.rom.read_bytes() if args.rom else None
    results: dict[str, float] = {}
    old = None if args.no_baseline else Baseline(args.baseline_rev, {"memory": MEMORY})
    try:
        with tempfile.TemporaryDirectory(prefix="qmpgmem-bench-") as tmp:
            await boot(rom, Path(tmp) / "warm")  # page cache, CPUID cache, ROM build
            if old is not None:
                old.boot()  # the same for the old engine (its guest builds once)
            boots, rom_boots, old_boots, serial_boots = [], [], [], []
            for i in range(args.repeat):  # interleaved, so load changes hit all alike
                boots.append(await boot(rom, Path(tmp) / f"b{i}"))
                rom_boots.append(await boot(rom, Path(tmp) / f"r{i}", SPEC_ROM))
                with hello_over_serial():
                    serial_boots.append(await boot(rom, Path(tmp) / f"s{i}"))
                if old is not None:
                    old_boots.append(old.boot())
            now = statistics.median(t for t, _ in boots)
            results["start() to HELLO (ms)"] = now * 1e3
            results["start() to HELLO from the reset vector (ms)"] = (
                statistics.median(t for t, _ in rom_boots) * 1e3
            )
            results["start() to HELLO, HELLO over COM1 (no mailbox offer) (ms)"] = (
                statistics.median(t for t, _ in serial_boots) * 1e3
            )
            if old_boots:
                before = statistics.median(t for t, _ in old_boots)
                results[f"start() to HELLO, engine of {args.baseline_rev} (ms)"] = before * 1e3
                results["start() to HELLO, old/new"] = before / now
                for name, sec in medians([phases(log, PHASES) for _, log in old_boots]).items():
                    results[f"phase, {args.baseline_rev}: {name} (ms)"] = sec * 1e3
            for name, sec in medians([phases(log, PHASES) for _, log in boots]).items():
                results[f"phase, now: {name} (ms)"] = sec * 1e3
            for name, sec in medians([phases(log, FINE_PHASES) for _, log in boots]).items():
                results[f"phase, now, fine: {name} (ms)"] = sec * 1e3
            results.update(await in_vm(rom, Path(tmp) / "vm", args.repeat, not args.no_memory))
    finally:
        if old is not None:
            old.close()
    if NO_GMEM:
        print(f"64 MiB region: memfd, not guest_memfd (this host: {NO_GMEM})\n")
    print(f"| direct KVM engine (median of {args.repeat}) | value |")
    print("|---|---|")
    for name, value in results.items():
        print(f"| {name} | {value:.2f} |")
    if args.json:
        rows = [(name, f"{value:.2f}") for name, value in results.items()]
        write_json(
            args.json,
            "kvm_engine",
            results,
            rows,
            ("figure", "value"),
            repeat=args.repeat,
            backend=BACKEND,
        )


if __name__ == "__main__":
    asyncio.run(main())
