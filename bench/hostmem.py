"""The host's side of the memory checks: hashes, host reads, and whole 256 MiB steps.

Each figure stands beside its baseline measured in the same run, and is quoted as a ratio:

* expected hashes of a 256 MiB pattern: the compiled helper (qmpgmem.fasthash, one thread and
  all) beside the numpy definition (qmpgmem.guest.protocol) that computed them before;
* host reads of 64 and 256 MiB on each engine: ``host_hash`` in place (QEMU: map_files of
  the RAM block; kvm: the engine's own mapping), first read and warm, beside what host.read
  did before — QEMU ``pmemsave`` and the file read back, the kvm engine a copy of the
  mapping, each then hashed with numpy;
* whole steps of bench/scenarios/memfd-256m.yaml through the runner on both engines (the
  run report's step durations), beside the guest's own HASH of the 256 MiB and the old
  step's work done the old way (the guest's or host's read plus numpy's expected hash).

Usage: .venv/bin/python bench/hostmem.py [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import mmap
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
from jsonout import write_json

from qmpgmem import fasthash
from qmpgmem.engines.base import Engine
from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.guest import protocol
from qmpgmem.guest.image import guest_image
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import load_scenario
from qmpgmem.session import host_context, run_scenarios

MiB = 1 << 20
GiB = 1 << 30
SCENARIO = Path(__file__).resolve().parent / "scenarios" / "memfd-256m.yaml"
SEED = 0x256


def timed(fn: Callable[[], object], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


async def atimed(fn: Callable[[], Awaitable[object]], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def hash_figures(n: int) -> dict[str, Any]:
    """Seconds for 256 MiB: expected pattern hash and a hash of mapped memory, by path."""
    size = 256 * MiB
    h = fasthash.hasher()
    out: dict[str, Any] = {"hasher": h.name}
    out["pattern_numpy_s"] = timed(lambda: protocol.pattern_hash(7, 0, size), max(1, n // 2))
    if isinstance(h, fasthash.CompiledHasher):
        one = fasthash.CompiledHasher(h._lib, 1)
        out["pattern_compiled_1_s"] = timed(lambda: one.pattern_acc(7, 0, size // 8), n)
        out["pattern_compiled_s"] = timed(lambda: h.pattern_acc(7, 0, size // 8), n)
    fd = os.memfd_create("qmpgmem-bench")
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as m:
            m.write(protocol.pattern_bytes(7, 0, size))
            out.update(_memory_figures(m, n))
    finally:
        os.close(fd)
    return out


def _memory_figures(m: mmap.mmap, n: int) -> dict[str, float]:
    view = np.frombuffer(m, dtype=np.uint8)  # released on return, so the mapping can close
    addr, size = int(view.ctypes.data), len(m)
    return {
        "memory_numpy_s": timed(lambda: protocol.hash_bytes(view), max(1, n // 2)),
        "memory_copy_s": timed(lambda: bytes(m), max(1, n // 2)),
        "memory_compiled_s": timed(lambda: fasthash.hash_address(addr, size), n),
    }


def qemu_engine(run_dir: Path) -> QemuEngine:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "needs qemu-system-x86_64"
    vm = load_scenario(SCENARIO).scenario.vm
    return QemuEngine(
        vm, qemu_binary=qemu, accel="kvm", boot_image=guest_image("rom"), run_dir_parent=run_dir
    )


def kvm_engine(run_dir: Path) -> KvmEngine:
    vm = load_scenario(SCENARIO).scenario.vm
    return KvmEngine(vm, run_dir=run_dir / "kvm", boot_timeout=30, step_timeout=60)


async def read_figures(eng: Engine, n: int) -> dict[str, Any]:
    """The engine's host reads of 64 and 256 MiB of the written region, new and old path."""
    out: dict[str, Any] = {}
    async with eng:
        whole = eng.resolve("big", 0, 256 * MiB)
        await eng.guest_write(whole, SEED)
        want = protocol.pattern_hash(SEED, 0, whole.size)
        out["guest_hash_256_s"] = await atimed(lambda: eng.guest_hash(whole), n)
        t0 = time.perf_counter()
        first = await eng.host_hash(whole)
        out["host_hash_256_first_s"] = time.perf_counter() - t0
        assert first.value == want, "in-place hash disagrees with the pattern"
        out["via"] = first.via
        for label, rng in (("64", eng.resolve("big", 64 * MiB, 64 * MiB)), ("256", whole)):
            expected = protocol.pattern_hash(SEED, rng.offset, rng.size)

            async def new(rng: Any = rng, expected: int = expected) -> None:
                assert (await eng.host_hash(rng)).value == expected

            async def old(rng: Any = rng, expected: int = expected) -> None:
                data = await eng.host_read(rng)
                assert protocol.hash_bytes(data) == expected

            out[f"host_hash_{label}_s"] = await atimed(new, n)
            out[f"old_read_{label}_s"] = await atimed(old, max(1, n // 2))

        async def old_verify() -> None:
            assert await eng.guest_hash(whole) == protocol.pattern_hash(SEED + 1, 0, whole.size)

        await eng.guest_write(whole, SEED + 1)
        out["old_verify_256_s"] = await atimed(old_verify, max(1, n // 2))
    return out


async def step_figures(engine: str, n: int) -> dict[str, float]:
    """Median duration of each step of the 256 MiB scenario over ``n`` runs of the runner."""
    loaded = load_scenario(SCENARIO)
    ctx = await host_context()
    report = await run_scenarios([loaded] * n, ctx, RunOptions(engine=engine))
    per_step: dict[str, list[float]] = {}
    for res in report.results:
        assert res.status.value == "passed", res.reason
        for step in res.steps:
            per_step.setdefault(step.name or step.action, []).append(step.duration_s)
    return {name: statistics.median(ds) for name, ds in per_step.items()}


def rate(size: int, secs: float) -> str:
    return f"{size / secs / GiB:.2f} GiB/s"


def table(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    hf = r["hash"]
    size = 256 * MiB
    rows = [
        (
            "expected hash of a 256 MiB pattern, numpy (before)",
            f"{hf['pattern_numpy_s'] * 1e3:.1f} ms",
            rate(size, hf["pattern_numpy_s"]),
        )
    ]
    if "pattern_compiled_s" in hf:
        rows += [
            (
                "expected hash of a 256 MiB pattern, compiled, 1 thread",
                f"{hf['pattern_compiled_1_s'] * 1e3:.1f} ms",
                f"{rate(size, hf['pattern_compiled_1_s'])}; "
                f"{hf['pattern_numpy_s'] / hf['pattern_compiled_1_s']:.0f}x numpy",
            ),
            (
                f"expected hash of a 256 MiB pattern, {hf['hasher']}",
                f"{hf['pattern_compiled_s'] * 1e3:.1f} ms",
                f"{rate(size, hf['pattern_compiled_s'])}; "
                f"{hf['pattern_numpy_s'] / hf['pattern_compiled_s']:.0f}x numpy",
            ),
        ]
    rows.append(
        (
            f"hash of 256 MiB mapped memory in place, {hf['hasher']}",
            f"{hf['memory_compiled_s'] * 1e3:.1f} ms",
            f"{rate(size, hf['memory_compiled_s'])}; numpy {rate(size, hf['memory_numpy_s'])} "
            f"({hf['memory_numpy_s'] / hf['memory_compiled_s']:.0f}x); a bare copy "
            f"{rate(size, hf['memory_copy_s'])}",
        )
    )
    old_name = {"qemu": "pmemsave + numpy", "kvm": "copy of the mapping + numpy"}
    for eng in ("qemu", "kvm"):
        f = r[f"{eng}_reads"]
        for label, size_ in (("64", 64 * MiB), ("256", 256 * MiB)):
            new, old = f[f"host_hash_{label}_s"], f[f"old_read_{label}_s"]
            rows.append(
                (
                    f"{eng} engine: host read {label} MiB in place ({f['via']}), warm",
                    f"{new * 1e3:.1f} ms",
                    f"{rate(size_, new)}; before ({old_name[eng]}) {old * 1e3:.0f} ms, "
                    f"{rate(size_, old)}: {old / new:.0f}x",
                )
            )
        rows.append(
            (
                f"{eng} engine: host read 256 MiB in place, first read (maps, faults in)",
                f"{f['host_hash_256_first_s'] * 1e3:.1f} ms",
                rate(256 * MiB, f["host_hash_256_first_s"]),
            )
        )
    for eng in ("qemu", "kvm"):
        s, f = r[f"{eng}_steps"], r[f"{eng}_reads"]
        guest = f["guest_hash_256_s"]
        rows += [
            (
                f"{eng} engine: whole step guest.verify 256 MiB (runner)",
                f"{s['guest.verify'] * 1e3:.1f} ms",
                f"the guest's own HASH {guest * 1e3:.1f} ms ({s['guest.verify'] / guest:.2f}x); "
                f"the old way (HASH, then numpy's expectation) "
                f"{f['old_verify_256_s'] * 1e3:.0f} ms",
            ),
            (
                f"{eng} engine: whole step host.read 256 MiB, first (runner)",
                f"{s['host.read'] * 1e3:.1f} ms",
                f"the old way ({old_name[eng]}, numpy's expectation) about "
                f"{(f['old_read_256_s'] + r['hash']['pattern_numpy_s']) * 1e3:.0f} ms "
                f"({(f['old_read_256_s'] + r['hash']['pattern_numpy_s']) / s['host.read']:.0f}x)",
            ),
            (
                f"{eng} engine: whole step host.read 256 MiB, again (runner)",
                f"{s['again'] * 1e3:.1f} ms",
                "",
            ),
            (
                f"{eng} engine: whole step host.read 64 MiB (runner)",
                f"{s['64 MiB'] * 1e3:.1f} ms",
                rate(64 * MiB, s["64 MiB"]),
            ),
        ]
    return rows


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    n = args.repeat
    r: dict[str, Any] = {"hash": hash_figures(n)}
    with tempfile.TemporaryDirectory(prefix="qmpgmem-bench-") as tmp:
        r["qemu_reads"] = await read_figures(qemu_engine(Path(tmp)), n)
        r["kvm_reads"] = await read_figures(kvm_engine(Path(tmp)), n)
    r["qemu_steps"] = await step_figures("qemu", n)
    r["kvm_steps"] = await step_figures("kvm", n)
    rows = table(r)
    print(f"median of {n} (old paths: of {max(1, n // 2)}); load {os.getloadavg()[0]:.1f}\n")
    print("| figure | median | beside the baseline (same run) |")
    print("|---|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if args.json:
        write_json(args.json, "hostmem", r, rows, repeat=n, load=os.getloadavg())


if __name__ == "__main__":
    asyncio.run(main())
