"""Benchmarks of the QEMU engine on the real micro guest; prints a Markdown table.

Each figure is the median of --repeat runs, measured beside a baseline taken in the same run
(TCG for the accelerator, the firmware -kernel path for the boot path), and quoted as a ratio.
Usage: .venv/bin/python bench/run_all.py [--repeat N] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from figures import hello_over_serial, machine_default_firmware, median_latency, memory_figures
from jsonout import write_json

from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.guest.channel import GuestChannel
from qmpgmem.guest.image import guest_image
from qmpgmem.scenario.model import VmSpec

MiB = 1 << 20


def vm(machine: str = "microvm", boot: str = "auto", size: str = "80M") -> VmSpec:
    return VmSpec.model_validate(
        {"machine": machine, "guest": {"boot": boot}, "memory": [{"id": "m0", "size": size}]}
    )


def engine(accel: str, machine: str = "microvm", boot: str = "rom") -> QemuEngine:
    qemu = shutil.which("qemu-system-x86_64")
    assert qemu, "needs qemu-system-x86_64"
    return QemuEngine(
        vm(machine, boot),
        qemu_binary=qemu,
        accel=accel,
        boot_image=guest_image("rom" if boot == "rom" else "pvh"),
        boot_timeout=60,
    )


async def median(fn: Callable[[], Awaitable[float]], n: int) -> float:
    return statistics.median([await fn() for _ in range(n)])


async def boot_time(accel: str, machine: str = "microvm", boot: str = "rom") -> float:
    eng = engine(accel, machine, boot)
    try:
        await eng.start()
        assert eng.ready_after is not None
        return eng.ready_after
    finally:
        await eng.stop()


async def in_vm(accel: str, n: int) -> dict[str, float]:
    """Request round trip, QMP round trip, 64 MiB guest write/hash, host read (pmemsave)."""
    eng = engine(accel)
    try:
        await eng.start()
        channel = eng.channel
        assert channel is not None
        out = {
            "ping_s": await median_latency(channel.ping, max(n, 50)),
            "ping_serial_s": await ping_over_serial(channel, max(n, 50)),
            "qmp_s": await median_latency(lambda: eng.qmp("query-status", {}), max(n, 20)),
        }
        out.update(await memory_figures(eng, eng.resolve("m0", 0, 64 * MiB), n))
    finally:
        await eng.stop()
    return out


async def ping_over_serial(channel: GuestChannel, n: int) -> float:
    """PING with the mailbox set aside: the same guest, over COM1 (the baseline)."""
    with channel.over_serial():
        return await median_latency(channel.ping, n)


async def throughput(engine_name: str, n: int) -> float:
    """Seconds per run of scenarios/basic/smoke.yaml, whole scenario (boot to teardown)."""
    from pathlib import Path

    from qmpgmem.runner import RunOptions
    from qmpgmem.scenario.loader import load_scenario
    from qmpgmem.session import host_context, run_scenarios

    smoke = load_scenario(Path(__file__).resolve().parents[1] / "scenarios/basic/smoke.yaml")
    ctx = await host_context()
    t0 = time.perf_counter()
    report = await run_scenarios([smoke] * n, ctx, RunOptions(engine=engine_name))
    assert report.summary.passed == n, report.results[0].reason
    return (time.perf_counter() - t0) / n


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    ap.add_argument(
        "--skip-firmware",
        action="store_true",
        help="skip the q35 firmware boot (about 3 s a run here)",
    )
    args = ap.parse_args()
    n = args.repeat
    r: dict[str, Any] = {}
    boots, serial = [], []
    for _ in range(n):  # interleaved: the HELLO through the mailbox, and over COM1
        boots.append(await boot_time("kvm"))
        with hello_over_serial():
            serial.append(await boot_time("kvm"))
    r["boot_rom_kvm"] = statistics.median(boots)
    r["boot_rom_kvm_serial_hello"] = statistics.median(serial)
    r["boot_rom_tcg"] = await median(lambda: boot_time("tcg"), n)
    r["boot_pvh_microvm_kvm"] = await median(lambda: boot_time("kvm", "microvm", "pvh"), n)
    r["boot_pvh_microvm_tcg"] = await median(lambda: boot_time("tcg", "microvm", "pvh"), n)
    if not args.skip_firmware:
        few = max(1, n // 2)
        with machine_default_firmware():
            r["boot_pvh_microvm_default_kvm"] = await median(
                lambda: boot_time("kvm", "microvm", "pvh"), few
            )
        r["boot_pvh_q35_kvm"] = await median(lambda: boot_time("kvm", "q35", "pvh"), few)
        r["boot_pvh_q35_tcg"] = await median(lambda: boot_time("tcg", "q35", "pvh"), few)
    r["smoke_qemu"] = await throughput("qemu", 4 * n)
    r["smoke_kvm_engine"] = await throughput("kvm", 4 * n)
    r["kvm"] = await in_vm("kvm", n)
    r["tcg"] = await in_vm("tcg", n)
    gib = 64 * MiB / (1 << 30)
    rows = [
        (
            "QEMU start → guest HELLO, ROM on microvm, KVM",
            r["boot_rom_kvm"],
            f"TCG {r['boot_rom_tcg'] * 1e3:.1f} ms (TCG/KVM = "
            f"{r['boot_rom_tcg'] / r['boot_rom_kvm']:.2f}); HELLO over COM1 "
            f"{r['boot_rom_kvm_serial_hello'] * 1e3:.1f} ms "
            f"({r['boot_rom_kvm_serial_hello'] / r['boot_rom_kvm']:.2f}x)",
        ),
        (
            "QEMU start → HELLO, PVH via qboot on microvm, KVM",
            r["boot_pvh_microvm_kvm"],
            f"{r['boot_pvh_microvm_kvm'] / r['boot_rom_kvm']:.1f}x the ROM path; TCG "
            f"{r['boot_pvh_microvm_tcg'] * 1e3:.1f} ms (TCG/KVM = "
            f"{r['boot_pvh_microvm_tcg'] / r['boot_pvh_microvm_kvm']:.2f})",
        ),
    ]
    if "boot_pvh_q35_kvm" in r:
        rows += [
            (
                "QEMU start → HELLO, PVH via microvm's default firmware (SeaBIOS here), KVM",
                r["boot_pvh_microvm_default_kvm"],
                f"{r['boot_pvh_microvm_default_kvm'] / r['boot_pvh_microvm_kvm']:.0f}x qboot",
            ),
            (
                "QEMU start → HELLO, PVH via SeaBIOS on q35, KVM",
                r["boot_pvh_q35_kvm"],
                f"{r['boot_pvh_q35_kvm'] / r['boot_rom_kvm']:.0f}x the ROM path; TCG "
                f"{r['boot_pvh_q35_tcg'] * 1e3:.1f} ms (TCG/KVM = "
                f"{r['boot_pvh_q35_tcg'] / r['boot_pvh_q35_kvm']:.2f})",
            ),
        ]
    k, t = r["kvm"], r["tcg"]
    rows += [
        (
            "guest request round trip (PING, mailbox), KVM",
            k["ping_s"],
            f"TCG {t['ping_s'] * 1e3:.3f} ms (TCG/KVM = {t['ping_s'] / k['ping_s']:.2f}); "
            f"over COM1 {k['ping_serial_s'] * 1e3:.3f} ms "
            f"(serial/mailbox = {k['ping_serial_s'] / k['ping_s']:.1f})",
        ),
        (
            "QMP round trip (query-status), KVM",
            k["qmp_s"],
            f"TCG {t['qmp_s'] * 1e3:.3f} ms (TCG/KVM = {t['qmp_s'] / k['qmp_s']:.2f})",
        ),
        (
            "guest WRITE 64 MiB, KVM",
            k["write_s"],
            f"{gib / k['write_s']:.2f} GiB/s; TCG {gib / t['write_s']:.2f} GiB/s "
            f"({t['write_s'] / k['write_s']:.1f}x)",
        ),
        (
            "guest HASH 64 MiB, KVM",
            k["hash_s"],
            f"{gib / k['hash_s']:.2f} GiB/s; TCG {gib / t['hash_s']:.2f} GiB/s "
            f"({t['hash_s'] / k['hash_s']:.1f}x)",
        ),
        (
            "host read 64 MiB (pmemsave into the run dir, read back), KVM",
            k["host_read_s"],
            f"{gib / k['host_read_s']:.2f} GiB/s; "
            f"{k['host_read_s'] / k['hash_s']:.1f}x the guest's own hash",
        ),
        (
            "host read 64 MiB in place (map_files, hashed), KVM",
            k["host_hash_s"],
            f"{gib / k['host_hash_s']:.2f} GiB/s; {k['host_read_s'] / k['host_hash_s']:.0f}x "
            "pmemsave's copy (not hashed) above",
        ),
    ]
    rows += [
        ("scenario throughput: basic-smoke, qemu engine (KVM)", r["smoke_qemu"],
         f"{1 / r['smoke_qemu']:.1f} scenarios/s"),
        ("scenario throughput: basic-smoke, direct kvm engine", r["smoke_kvm_engine"],
         f"{1 / r['smoke_kvm_engine']:.1f} scenarios/s "
         f"(qemu/kvm engine = {r['smoke_qemu'] / r['smoke_kvm_engine']:.2f})"),
    ]  # fmt: skip
    print(f"median of {n} runs (throughput: mean of {4 * n} runs)\n")
    print("| figure | median | beside the baseline |")
    print("|---|---:|---|")
    table = [(name, f"{secs * 1e3:.3f} ms", note) for name, secs, note in rows]
    for row in table:
        print("| " + " | ".join(row) + " |")
    if args.json:
        write_json(args.json, "run_all", r, table, ("figure", "median", "beside the baseline"))


if __name__ == "__main__":
    asyncio.run(main())
