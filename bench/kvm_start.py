"""The kvm engine's start() -> HELLO, by phase, beside the engine of another git revision.

Why a child process for the baseline: the old path is the old engine and its guest together
(a serial HELLO, more memslots, the sources hashed at every start), so the baseline is the
whole tree of ``--baseline-rev`` (``git archive``), imported in a child that boots on
request; the boots of the two alternate, so load changes hit both alike.

Phases come from the engine's own event log (kvm.log: seconds since start() began), which
both revisions write; a phase is the time from the previous mark to its own.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: the last commit before issue 15's start work (serial HELLO, ROM and alias memslots)
BASELINE_REV = "fd6a37e"

#: (phase, the event text that ends it); the first mark wins, HELLO ends the last phase
PHASES: tuple[tuple[str, str], ...] = (
    ("guest image, /dev/kvm, KVM_CREATE_VM", "KVM_CREATE_VM"),
    ("VM caps, guest_memfd, mmaps, memslots", "vCPU 0 enters"),
    ("UART, channel, vCPU thread, guest until HELLO, loop wake-up", "HELLO after"),
)
#: finer marks only the new engine writes
FINE_PHASES: tuple[tuple[str, str], ...] = (
    ("guest image (digest of the sources, read)", "ROM image read"),
    ("/dev/kvm, KVM_CREATE_VM", "KVM_CREATE_VM"),
    ("VM caps, guest_memfd, mmaps, memslots", "memory:"),
    ("vCPU create, CPUID, registers, boot tables, payload", "vCPU 0 enters"),
    ("UART, guest channel (log file), mailbox offer", "vCPUs set up"),
    ("vCPU thread start", "vCPU 0 thread started"),
    ("guest to HELLO (1st KVM_RUN, doorbell), loop wake-up", "HELLO after"),
)

CHILD = r"""
import asyncio, json, sys, tempfile
from pathlib import Path
from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.scenario.model import VmSpec

SPEC = VmSpec.model_validate(json.loads(sys.argv[1]))

async def boot(run_dir):
    e = KvmEngine(SPEC, run_dir=run_dir, boot_timeout=30, step_timeout=60)
    try:
        await e.start()
    finally:
        await e.stop()
    return e.ready_after, (run_dir / "kvm.log").read_text()

async def main():
    with tempfile.TemporaryDirectory(prefix="qmpgmem-bench-old-") as tmp:
        for n, line in enumerate(sys.stdin):
            ready, log = await boot(Path(tmp) / str(n))
            print(json.dumps({"ready": ready, "log": log}), flush=True)

asyncio.run(main())
"""


def events(log: str) -> list[tuple[float, str]]:
    """(seconds since start() began, text) of each event line of a kvm.log."""
    out = []
    for line in log.splitlines():
        head, _, text = line.strip().partition(" ")
        try:
            out.append((float(head), text))
        except ValueError:
            continue  # "backend ...", "vm {...}", the runners' counts
    return out


def phases(log: str, marks: tuple[tuple[str, str], ...]) -> dict[str, float]:
    """Seconds per phase of one boot; a phase whose mark is missing is left out."""
    evs = events(log)
    out: dict[str, float] = {}
    last = 0.0
    for name, mark in marks:
        at = next((t for t, text in evs if text.startswith(mark)), None)
        if at is None:
            continue
        out[name] = at - last
        last = at
    return out


def medians(boots: list[dict[str, float]]) -> dict[str, float]:
    names = [name for name in boots[0] if all(name in b for b in boots)]
    return {name: statistics.median(b[name] for b in boots) for name in names}


class Baseline:
    """The engine of ``rev`` in a child process; ``boot()`` -> (seconds, kvm.log)."""

    def __init__(self, rev: str, spec: dict[str, Any]) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="qmpgmem-bench-rev-")
        tree = Path(self._tmp.name)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "qmpgmem", "images"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, json.dumps(spec)],
            cwd=tree,
            env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def boot(self) -> tuple[float, str]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("boot\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the baseline engine exited ({self._proc.wait()})")
        reply = json.loads(line)
        return float(reply["ready"]), str(reply["log"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._tmp.cleanup()
