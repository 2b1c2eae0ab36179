"""Shared fixtures: real QEMU and /dev/kvm, skipped with the reason when absent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from qmpgmem.scenario.loader import LoadedScenario, load_scenario

QEMU = shutil.which("qemu-system-x86_64")

#: Every process this test process starts inherits this mark, QEMU included, so an orphaned
#: QEMU can be told apart from another pytest-xdist worker's (or another run's on the
#: machine) by its environment.
OWNER_VAR = "QMPGMEM_TEST_OWNER"
os.environ[OWNER_VAR] = str(os.getpid())
#: No test's `run -j` reads or writes the user's history of run durations, so the order runs
#: start in is the plan's unless a test gives a file of its own (tests/test_durations.py).
os.environ["QMPGMEM_DURATIONS"] = "none"


def qmpgmem_cli(
    *args: str,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """``python -m qmpgmem.cli ARGS`` in ``cwd``, its output captured as text; ``env``: set
    on top of this process's environment."""
    return subprocess.run(
        [sys.executable, "-m", "qmpgmem.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def qemu_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "qemu-system"], capture_output=True, text=True).stdout
    return {int(p) for p in out.split()}


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[1])


def our_qemu_pids() -> set[int]:
    """QEMU processes this test process started: its descendants, and orphaned ones that
    carry its mark (:data:`OWNER_VAR`).

    Other test runs, and the other pytest-xdist workers, start their own QEMUs on this
    machine at the same time; one of theirs orphaned for a moment is not this test's.
    """
    me, mine = os.getpid(), set()
    for pid in qemu_pids():
        p = pid
        while p > 1:
            p = _ppid(p)
            if p == me:
                mine.add(pid)
                break
        else:
            if _ppid(pid) == 1 and _owner(pid) == str(me):
                mine.add(pid)
    return mine


def _owner(pid: int) -> str | None:
    """The test process that started ``pid`` (its :data:`OWNER_VAR`), None if unmarked."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    prefix = f"{OWNER_VAR}=".encode()
    for entry in environ.split(b"\0"):
        if entry.startswith(prefix):
            return entry[len(prefix) :].decode(errors="replace")
    return None


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
def no_leftovers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if it leaves a QEMU process or a qmpgmem run directory behind.

    Temporary files of this test (and of the processes it starts) go to a directory of its
    own, so other runs on the machine cannot disturb the count.
    """
    import tempfile

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("TMPDIR", str(tmp))
    before_pids = our_qemu_pids()
    yield
    left = our_qemu_pids() - before_pids
    assert not left, f"QEMU processes left behind: {left}"
    dirs = list(tmp.glob("qmpgmem-*"))
    assert not dirs, f"run directories left behind: {dirs}"


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[[str, str], Path]:
    def write(name: str, text: str) -> Path:
        path = tmp_path / f"{name}.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture(scope="session")
def junit_xsd() -> Any:
    """Jenkins' JUnit schema (junit-10.xsd, from pytest's sdist, cached by the fetch script)."""
    import sys

    import xmlschema

    script = Path(__file__).resolve().parents[1] / "tools" / "fetch-junit-xsd.sh"
    out = subprocess.run(
        ["bash", str(script), sys.executable], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, f"cannot fetch junit-10.xsd: {out.stderr.strip()}"
    return xmlschema.XMLSchema(out.stdout.strip())


# -- small scenarios of the scheduler's and the durations' tests -------------------------------


def scenario_text(name: str, sleep: float = 0, size: str = "16M") -> str:
    """A scenario on a one-region microvm: optionally a sleep, then a write and its verify."""
    sleep_step = f"- action: sleep\n  seconds: {sleep}\n" if sleep else ""
    return (
        textwrap.dedent(
            f"""\
            name: {name}
            description: a run of the scheduler tests
            vm:
              machine: microvm
              memory:
                - id: m0
                  size: {size}
            steps:
            """
        )
        + sleep_step
        + textwrap.dedent(
            """\
              - action: guest.write
                range: {region: m0, offset: 0, size: 64K}
                seed: 3
              - action: guest.verify
                range: {region: m0, offset: 0, size: 64K}
                expect: {pattern: 3}
            """
        )
    )


@pytest.fixture
def make_scenario(tmp_path: Path) -> Callable[..., LoadedScenario]:
    def make(name: str, sleep: float = 0, size: str = "16M") -> LoadedScenario:
        path = tmp_path / f"{name}.yaml"
        path.write_text(scenario_text(name, sleep, size))
        return load_scenario(path)

    return make
