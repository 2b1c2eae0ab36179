"""Shared fixtures: real QEMU and /dev/kvm, skipped with the reason when absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

QEMU = shutil.which("qemu-system-x86_64")


def qemu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


@pytest.fixture
def qemu_binary() -> str:
    if QEMU is None:
        pytest.skip("needs qemu-system-x86_64 (make setup installs it)")
    return QEMU


@pytest.fixture
def kvm_available() -> None:
    if not (os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)):
        pytest.skip("needs /dev/kvm")


@pytest.fixture
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """Fail the test if it leaves a QEMU process or a qmpgmem run directory behind."""
    import tempfile

    tmp = Path(tempfile.gettempdir())
    before_pids = qemu_pids()
    before_dirs = set(tmp.glob("qmpgmem-run-*"))
    yield
    left = qemu_pids() - before_pids
    assert not left, f"QEMU processes left behind: {left}"
    dirs = set(tmp.glob("qmpgmem-run-*")) - before_dirs
    assert not dirs, f"run directories left behind: {dirs}"


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return write
