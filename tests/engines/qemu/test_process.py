"""QemuProcess on its own: a QEMU that cannot be executed is a clear launch error, and a
QEMU dies with the process that started it, through setpriv and through the fallback."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpgmem.engines.qemu.process import QemuProcess
from qmpgmem.errors import VMLaunchError


def _not_executable(tmp_path: Path, kind: str) -> tuple[str, str]:
    """A QEMU path of the given kind and the words the launch error must say about it."""
    if kind == "missing":
        return str(tmp_path / "no-such-qemu"), "[Errno 2] No such file or directory"
    if kind == "not on PATH":
        return "qemu-system-nowhere", "not found on PATH"
    if kind == "directory":
        return str(tmp_path), "[Errno 13] Permission denied"
    plain = tmp_path / "qemu-not-executable"
    plain.write_text("#!/bin/sh\n")
    return str(plain), "[Errno 13] Permission denied"


@pytest.mark.parametrize("kind", ["missing", "not on PATH", "directory", "mode 0644"])
async def test_a_qemu_that_cannot_run_is_a_launch_error(tmp_path: Path, kind: str) -> None:
    binary, words = _not_executable(tmp_path, kind)
    (tmp_path / "runs").mkdir()
    proc = QemuProcess(tmp_path / "runs")
    try:
        with pytest.raises(VMLaunchError) as info:
            await proc.launch(proc.paused_monitor_argv(binary))
    finally:
        await proc.close()
    assert str(info.value).startswith(f"cannot execute {binary}: "), info.value
    assert words in str(info.value)
    assert proc.proc is None  # nothing was started
    assert not proc.run_dir.exists()


#: Starts a paused QEMU through QemuProcess, prints its pid, then waits to be killed.
#: ``mode`` picks how the QEMU learns of its parent's death.
LAUNCHER = textwrap.dedent(
    """
    import asyncio, sys
    from qmpgmem.engines.qemu import process

    mode, binary, runs = sys.argv[1:4]
    if mode != "setpriv":
        process._setpriv_path = lambda: None  # the preexec_fn fallback
    if mode == "none":
        process.die_with_parent = lambda: None  # the control: nothing ties QEMU to us

    async def main():
        proc = process.QemuProcess(runs)
        await proc.launch(proc.paused_monitor_argv(binary) + ["-machine", "none"])
        print(proc.proc.pid, flush=True)
        await asyncio.sleep(60)

    asyncio.run(main())
    """
)


def _within(seconds: float, holds: Callable[[], bool]) -> bool:
    """Whether ``holds()`` becomes true within ``seconds``, polled every 20 ms."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if holds():
            return True
        time.sleep(0.02)
    return False


def _runs(pid: int, prefix: bytes) -> bool:
    """Whether ``pid`` runs ``prefix`` yet (setpriv execs QEMU in place, keeping the pid)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().startswith(prefix)
    except OSError:
        return False


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited: no such process, or a zombie waiting for init to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.mark.qemu
@pytest.mark.parametrize(("mode", "dies"), [("setpriv", True), ("preexec", True), ("none", False)])
def test_qemu_dies_with_the_process_that_started_it(
    qemu_binary: str, tmp_path: Path, mode: str, dies: bool
) -> None:
    if mode == "setpriv" and shutil.which("setpriv") is None:
        pytest.skip("util-linux setpriv is not installed: the launch uses the preexec fallback")
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, mode, qemu_binary, str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert launcher.stdout is not None
    qemu = int(launcher.stdout.readline())
    try:
        assert _within(10, lambda: _runs(qemu, qemu_binary.encode())), "QEMU never started"
        launcher.kill()  # SIGKILL: no handler, no finally runs in the launcher
        launcher.wait(10)
        assert _within(5, lambda: _gone(qemu)) is dies
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(qemu, signal.SIGKILL)  # the control's QEMU, or a failed check's
