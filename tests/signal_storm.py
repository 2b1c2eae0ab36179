"""Signals at chosen moments of a real ``qmpgmem run``, and what each left behind.

Shared by tests/test_signal_storm.py (fixed moments across the phases) and bench/signals.py
(hundreds of random moments, counts reported). Each run gets a private TMPDIR, so a leftover
run directory or a QEMU started by that run (found by the TMPDIR in its environment) is
attributed to it alone.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "scenarios/basic/smoke.yaml"


@dataclass
class StormRun:
    delay_s: float
    sig: signal.Signals
    second_after_s: float | None  # a second signal this long after the first
    engine: str
    returncode: int = 0
    elapsed_s: float = 0.0
    traceback: bool = False
    left_dirs: list[str] = field(default_factory=list)
    left_pids: list[int] = field(default_factory=list)
    stderr_tail: str = ""

    @property
    def clean(self) -> bool:
        """Nothing left behind, no traceback, and an exit a caller can read."""
        return (
            not self.traceback
            and not self.left_dirs
            and not self.left_pids
            and self.returncode in (0, 130)
        )

    def describe(self) -> str:
        second = f", again after {self.second_after_s * 1000:.0f} ms" if self.second_after_s else ""
        return (
            f"{self.sig.name} at {self.delay_s:.3f}s{second} ({self.engine}): exit "
            f"{self.returncode}, dirs {self.left_dirs}, pids {self.left_pids}"
            + (", traceback" if self.traceback else "")
        )


def _qemus_with_tmpdir(tmpdir: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if b"qemu-system" not in (proc / "cmdline").read_bytes():
                continue
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"TMPDIR={tmpdir}".encode() in env:
            found.append(int(proc.name))
    return found


def _caught_signals(pid: int) -> int:
    """The process's SigCgt mask (signals with a handler), 0 once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("SigCgt:"):
            return int(line.split()[1], 16)
    return 0


def _wait_for_handlers(pid: int, deadline: float) -> None:
    """Until qmpgmem's handlers exist: SIGTERM's is installed with SIGINT's and SIGHUP's
    (SIGINT has Python's own from the start, so its bit says nothing)."""
    bit = 1 << (int(signal.SIGTERM) - 1)
    while time.monotonic() < deadline:
        if _caught_signals(pid) & bit or not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.002)


def storm_once(
    delay_s: float,
    sig: signal.Signals = signal.SIGTERM,
    second_after_s: float | None = None,
    engine: str = "qemu",
    scenario: Path = SMOKE,
) -> StormRun:
    """Start a run, signal it after ``delay_s`` (and again), wait, and look for leftovers."""
    tmpdir = tempfile.mkdtemp(prefix="storm-")
    out = StormRun(delay_s, sig, second_after_s, engine)
    env = {**os.environ, "TMPDIR": tmpdir, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "qmpgmem.cli", "run", str(scenario), "--engine", engine]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=tmpdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The moment counts from exec, but never before qmpgmem's handlers exist: before
        # that, Python's own start-up has the default actions (docs/performance.md,
        # signals), and on a loaded machine start-up alone outlasts the shortest moment.
        _wait_for_handlers(proc.pid, deadline=t0 + 30)
        time.sleep(max(0.0, delay_s - (time.monotonic() - t0)))
        if proc.poll() is None:
            proc.send_signal(sig)
            if second_after_s is not None:
                time.sleep(second_after_s)
                if proc.poll() is None:
                    proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.elapsed_s = time.monotonic() - t0
    out.returncode = proc.returncode
    out.traceback = "Traceback" in err
    out.stderr_tail = err[-600:]
    time.sleep(0.1)  # a QEMU killed by its parent-death signal takes a moment to go
    out.left_pids = _qemus_with_tmpdir(tmpdir)
    for pid in out.left_pids:
        os.kill(pid, signal.SIGKILL)
    out.left_dirs = sorted(p.name for p in Path(tmpdir).glob("qmpgmem-*"))
    shutil.rmtree(tmpdir, ignore_errors=True)
    return out
