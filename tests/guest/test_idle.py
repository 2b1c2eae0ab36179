"""An idle guest sleeps: between requests it halts until COM1's receive interrupt wakes it.

Why measured from /proc/PID/stat: a guest that polls its UART keeps QEMU's vCPU thread in
and out of KVM_RUN (or TCG's loop) all the time, about a whole host core; a sleeping one
leaves QEMU blocked in poll(). The bound (a fifth of a core) is far from both: the target
(< 5 %) lives in bench/idle.py and docs/performance.md.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from qmpgmem.guest import protocol as p

from .conftest import require
from .vm import REGION_GPA, Boot, running_guest

pytestmark = [pytest.mark.qemu]

IDLE_SECONDS = 1.5
#: A polling guest measured 0.5-1.0 of a core here; a sleeping one ~0.01.
MOST_CPU_WHEN_IDLE = 0.2


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.parametrize(
    "boot",
    [Boot("rom", "kvm"), Boot("rom", "tcg"), Boot("pvh", "kvm", machine="q35")],
    ids=["rom-kvm", "rom-tcg", "pvh-q35-kvm"],
)
async def test_idle_guest_sleeps_and_wakes(qemu: str, tmp_path: Path, boot: Boot) -> None:
    require(boot)
    async with running_guest(qemu, tmp_path, boot) as vm:
        assert await vm.request("PING") == "OK PONG"
        before, t0 = cpu_seconds(vm.proc.pid), time.monotonic()
        await asyncio.sleep(IDLE_SECONDS)
        used = (cpu_seconds(vm.proc.pid) - before) / (time.monotonic() - t0)
        print(f"\n[{boot.kind}-{boot.accel}] idle QEMU: {used:.1%} of a core")
        assert used < MOST_CPU_WHEN_IDLE, f"the idle guest used {used:.0%} of a core"
        # the sleeping guest wakes for each request, also for a line that comes in pieces
        t1 = time.perf_counter()
        assert await vm.request("PING", timeout=5) == "OK PONG"
        woke = time.perf_counter() - t1
        vm.serial.send(b"HA")
        await vm.serial._writer.drain()
        await asyncio.sleep(0.05)
        assert await vm.request(f"SH {REGION_GPA:x} 8", timeout=5) == f"OK {p.zero_hash(8):016x}"
        assert woke < 1.0, f"the first request after idling took {woke:.3f} s"
