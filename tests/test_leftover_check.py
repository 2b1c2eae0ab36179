"""The leftover check itself: an orphaned QEMU of this test process is caught, another
worker's is not (pytest-xdist runs several test processes on one machine)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import OWNER_VAR, our_qemu_pids


def _orphan_qemu(qemu: str, owner: str) -> int:
    """A QEMU whose parent already exited (reparented to init), marked as ``owner``'s."""
    env = dict(os.environ, **{OWNER_VAR: owner})
    script = f"{qemu} -machine none -display none -nodefaults -S >/dev/null 2>&1 & echo $!"
    out = subprocess.run(
        ["sh", "-c", script], capture_output=True, text=True, env=env, check=True, timeout=30
    ).stdout
    pid = int(out.split()[0])
    cmdline = Path(f"/proc/{pid}/cmdline")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if b"qemu-system" in cmdline.read_bytes():
                return pid
        time.sleep(0.02)
    pytest.fail("the orphan QEMU did not start")


@pytest.mark.parametrize(("whose", "caught"), [("mine", True), ("another worker's", False)])
def test_an_orphaned_qemu_counts_only_for_its_owner(
    qemu_binary: str, whose: str, caught: bool
) -> None:
    owner = str(os.getpid()) if whose == "mine" else str(os.getpid() + 100000)
    pid = _orphan_qemu(qemu_binary, owner)
    try:
        assert (pid in our_qemu_pids()) is caught
    finally:
        os.kill(pid, signal.SIGKILL)
