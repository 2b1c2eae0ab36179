"""Real reports of this host for the fleet commands' tests: a run of two cheap scenarios, a
kernel-contract run and a probe, each made once per session; tests edit copies of them.

Why real ones: compare and aggregate read what the other commands write, so the fixtures
are what those commands wrote here, not hand-made JSON that could drift from the models.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import qmpgmem_cli

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = [ROOT / "scenarios/basic/smoke.yaml", ROOT / "scenarios/basic/file-backend.yaml"]


def qmpgmem(*args: str) -> subprocess.CompletedProcess[str]:
    """``qmpgmem ARGS`` in this process (click's runner; stdout and stderr apart): compare and
    aggregate only read files, and a child process per call costs a second of imports."""
    from click.testing import CliRunner

    from qmpgmem.cli.group import cli

    res = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return subprocess.CompletedProcess(list(args), res.exit_code, res.stdout, res.stderr)


def qmpgmem_process(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``qmpgmem ARGS`` in a child process, as a user runs it."""
    return qmpgmem_cli(*args, cwd=cwd, env={"PYTHONPATH": str(ROOT)}, timeout=300)


def _kvm_usable() -> bool:
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def _made(tmp: Path, name: str, *args: str) -> dict[str, Any]:
    out = tmp / name
    res = qmpgmem_process(*args, "--json", str(out))
    assert out.exists(), res.stdout + res.stderr
    data: dict[str, Any] = json.loads(out.read_text())
    return data


@pytest.fixture(scope="session")
def run_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``run --json`` of smoke and file-backend, on the qemu engine (and kvm when usable)."""
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64 (make setup installs it)")
    engines = ["--engine", "qemu"] + (["--engine", "kvm"] if _kvm_usable() else [])
    tmp = tmp_path_factory.mktemp("fleet-run")
    data = _made(tmp, "run.json", "run", *map(str, SCENARIOS), *engines)
    assert data["summary"]["passed"] == len(data["results"]) >= 2, data["results"]
    return data


@pytest.fixture(scope="session")
def contract_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if not _kvm_usable():
        pytest.skip("needs /dev/kvm")
    tmp = tmp_path_factory.mktemp("fleet-contract")
    data = _made(tmp, "contract.json", "kernel-contract")
    assert data["kind"] == "kernel-contract" and data["checks"]
    return data


@pytest.fixture(scope="session")
def probe_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("needs qemu-system-x86_64 (make setup installs it)")
    res = qmpgmem_process("probe", "--json")
    assert res.returncode == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)
    return data


@pytest.fixture
def write_copy(tmp_path: Path) -> Callable[..., Path]:
    """``write_copy(report, name, edit=None)``: a deep copy of ``report``, changed by
    ``edit(doc)`` when given, written to ``tmp_path/name``."""

    def write(
        report: dict[str, Any], name: str, edit: Callable[[dict[str, Any]], None] | None = None
    ) -> Path:
        doc = copy.deepcopy(report)
        if edit is not None:
            edit(doc)
        path = tmp_path / name
        path.write_text(json.dumps(doc, indent=2))
        return path

    return write


def result(doc: dict[str, Any], scenario: str, engine: str = "qemu") -> dict[str, Any]:
    """The result of ``scenario`` on ``engine`` in a run report."""
    found: dict[str, Any] = next(
        r for r in doc["results"] if r["scenario"] == scenario and r["engine"] == engine
    )
    return found
