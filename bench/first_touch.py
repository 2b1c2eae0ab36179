"""What a guest's first touch of fresh memory costs per 4 KiB page, and on which side of the host.

Why: on a kvm_pvm host the library's ROM-path scenarios ran slower under KVM than under TCG,
and the steps that lost were the first guest request over a fresh region (a 64 MiB
``guest.verify`` of zeros). This bench takes that one request apart, each figure the median
of --repeat fresh VMs, all in one run:

- kvm engine, memfd region: the guest's HASH of the untouched region (the scenario's case),
  with KVM's own count of the page faults it took (KVM_GET_STATS_FD) and the vCPU thread's
  CPU time split into user, system and guest (/proc/self/task/TID/stat); the same HASH after
  the host allocated the region's pages in the page cache (fallocate through
  /proc/self/map_files, nothing mapped), after the host mapped every page into the engine's
  own page tables (MADV_POPULATE_WRITE, also timed), and a second HASH of pages already
  faulted in (the floor);
- kvm engine, ram region: the same first HASH with the engine's RAM backed as QEMU backs
  its own (2 MiB aligned, MADV_HUGEPAGE: KVM maps a transparent huge page a fault), beside
  the same region without the advice (the engine before it gave it);
- QEMU engine, memfd and ram regions: the guest's first HASH of a fresh region under KVM
  and under TCG, then its second, so the figure the library sees stands beside its baseline.

Usage: .venv/bin/python bench/first_touch.py [--repeat N] [--size MIB] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from jsonout import write_json

from qmpgmem.engines.kvm import sys as ksys
from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.engines.kvm.objects import Mapping
from qmpgmem.engines.kvm.stats import changes
from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.guest.image import guest_image
from qmpgmem.scenario.model import VmSpec

MiB = 1 << 20
PAGE = 4096
MADV_POPULATE_WRITE = 23  # include/uapi/asm-generic/mman-common.h, Linux 5.14
FALLOC_KEEP_SIZE = 1


def spec(size: int, backend: str = "memfd") -> VmSpec:
    return VmSpec.model_validate({"memory": [{"id": "m0", "size": size, "backend": backend}]})


def thread_cpu(tid: int) -> tuple[float, float, float]:
    """(user, system, guest) seconds of one thread of this process."""
    fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick, int(fields[40]) / tick


def prepare_fallocate(addr: int, size: int) -> None:
    """Allocate the region's pages in the memfd's page cache, mapping none of them here."""
    fd = os.open(f"/proc/self/map_files/{addr:x}-{addr + size:x}", os.O_RDWR)
    try:
        ksys.fallocate(fd, FALLOC_KEEP_SIZE, 0, size)
    finally:
        os.close(fd)


def prepare_populate(addr: int, size: int) -> None:
    """Map every page of the region into this process's page tables (allocating as needed)."""
    ksys.madvise(addr, size, MADV_POPULATE_WRITE)


PREPARE: dict[str, Callable[[int, int], None] | None] = {
    "untouched": None,
    "page cache filled (fallocate)": prepare_fallocate,
    "mapped by the VMM (MADV_POPULATE_WRITE)": prepare_populate,
}
#: kvm-engine cases: (backend, how the host prepares the region, MADV_HUGEPAGE given)
KVM_CASES: dict[str, tuple[str, str, bool]] = {
    **{f"memfd, {how}": ("memfd", how, True) for how in PREPARE},
    "ram, 2 MiB aligned and MADV_HUGEPAGE": ("ram", "untouched", True),
    "ram, without MADV_HUGEPAGE (before)": ("ram", "untouched", False),
}


async def kvm_touch(size: int, backend: str, how: str, advise: bool) -> dict[str, float]:
    """One fresh kvm-engine VM: prepare the region ``how``, then two guest HASHes of it."""
    with tempfile.TemporaryDirectory() as run_dir:
        eng = KvmEngine(
            spec(size, backend), run_dir=Path(run_dir), boot_timeout=30, step_timeout=120
        )
        saved = Mapping.advise_huge
        if not advise:
            Mapping.advise_huge = lambda self: None  # type: ignore[method-assign]
        try:
            try:
                await eng.start()
            finally:
                Mapping.advise_huge = saved  # type: ignore[method-assign]
            assert eng._memory is not None and eng._runner is not None
            placed = next(p for p in eng._memory.regions if p.region.id == "m0")
            out: dict[str, float] = {}
            prepare = PREPARE[how]
            if prepare is not None:
                t0 = time.perf_counter()
                prepare(placed.mapping.addr, size)
                out["prepare_s"] = time.perf_counter() - t0
            rng = eng.resolve("m0", 0, size)
            stats = next(iter(eng._vcpu_stats.values()))
            tid = eng._runner._thread.native_id
            assert tid is not None
            for label in ("first", "second"):
                before, cpu0, t0 = stats.read(), thread_cpu(tid), time.perf_counter()
                await eng.guest_hash(rng)
                out[f"{label}_s"] = time.perf_counter() - t0
                moved = changes(before, stats.read())
                out[f"{label}_pf_taken"] = moved.get("pf_taken", 0)
                if label == "first":
                    split = [b - a for a, b in zip(cpu0, thread_cpu(tid), strict=True)]
                    out["user_s"], out["system_s"], out["guest_s"] = split
            return out
        finally:
            await eng.stop()


async def qemu_touch(size: int, backend: str, accel: str) -> dict[str, float]:
    """One fresh QEMU VM: the guest's first and second HASH of its region."""
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "needs qemu-system-x86_64"
    eng = QemuEngine(
        spec(size, backend),
        qemu_binary=qemu,
        accel=accel,
        boot_image=guest_image("rom"),
        boot_timeout=60,
    )
    try:
        await eng.start()
        rng = eng.resolve("m0", 0, size)
        out = {}
        for label in ("first", "second"):
            t0 = time.perf_counter()
            await eng.guest_hash(rng)
            out[f"{label}_s"] = time.perf_counter() - t0
        return out
    finally:
        await eng.stop()


async def medians(
    repeat: int, cases: dict[str, Callable[[], Awaitable[dict[str, float]]]]
) -> dict[str, dict[str, float]]:
    """Each case ``repeat`` times, interleaved so that load changes hit all alike; medians."""
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in cases}
    for _ in range(repeat):
        for name, case in cases.items():
            runs[name].append(await case())
    return {
        name: {key: statistics.median(r[key] for r in rs) for key in rs[0]}
        for name, rs in runs.items()
    }


def per_page(seconds: float, size: int) -> str:
    return f"{seconds / (size // PAGE) * 1e6:.1f} µs/page"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--size", type=int, default=64, help="region size in MiB (default 64)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    size = args.size * MiB
    kvm = await medians(
        args.repeat, {name: partial(kvm_touch, size, *case) for name, case in KVM_CASES.items()}
    )
    qemu_cases = {
        f"{backend}, {accel}": partial(qemu_touch, size, backend, accel)
        for backend in ("memfd", "ram")
        for accel in ("kvm", "tcg")
    }
    qemu = await medians(args.repeat, qemu_cases)
    table: list[tuple[str, str, str]] = []
    for name, f in kvm.items():
        faults = f["first_pf_taken"]
        note = f"{per_page(f['first_s'], size)}; {faults:.0f} faults, "
        note += f"{f['first_s'] / faults * 1e6:.1f} µs each" if faults else "none"
        note += (
            f"; vCPU thread: user {f['user_s'] * 1e3:.0f} ms (guest {f['guest_s'] * 1e3:.0f}),"
            f" system {f['system_s'] * 1e3:.0f} ms"
        )
        if "prepare_s" in f:
            note += f"; the host's preparation {f['prepare_s'] * 1e3:.1f} ms"
        note += f"; second HASH {f['second_s'] * 1e3:.1f} ms, {f['second_pf_taken']:.0f} faults"
        table.append((f"kvm engine, first HASH, {name}", f"{f['first_s'] * 1e3:.1f} ms", note))
    for name, f in qemu.items():
        table.append(
            (
                f"QEMU engine, first HASH, {name.replace('kvm', 'KVM').replace('tcg', 'TCG')}",
                f"{f['first_s'] * 1e3:.1f} ms",
                f"{per_page(f['first_s'], size)}; second HASH {f['second_s'] * 1e3:.1f} ms",
            )
        )
    print(f"{args.size} MiB region, median of {args.repeat} fresh VMs each\n")
    print("| figure | median | beside the baseline |")
    print("|---|---:|---|")
    for row in table:
        print("| " + " | ".join(row) + " |")
    print()
    for name, base in (
        ("memfd, page cache filled (fallocate)", "memfd, untouched"),
        ("memfd, mapped by the VMM (MADV_POPULATE_WRITE)", "memfd, untouched"),
        ("ram, 2 MiB aligned and MADV_HUGEPAGE", "ram, without MADV_HUGEPAGE (before)"),
    ):
        ratio = kvm[base]["first_s"] / kvm[name]["first_s"]
        print(f"kvm engine, {name}: {ratio:.1f}x faster than {base}")
    for backend in ("memfd", "ram"):
        ratio = qemu[f"{backend}, kvm"]["first_s"] / qemu[f"{backend}, tcg"]["first_s"]
        print(f"QEMU, {backend}: the first HASH under KVM takes {ratio:.2f}x its time under TCG")
    if args.json:
        figures: dict[str, Any] = {"size": size, "kvm_engine": kvm, "qemu": qemu}
        write_json(args.json, "first_touch", figures, table, repeat=args.repeat)


if __name__ == "__main__":
    asyncio.run(main())
