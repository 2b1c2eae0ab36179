"""The lab tier: qmpgmem inside a nested L1 whose kvm_amd converts memory (`make lab`).

Not part of `make test`: each test boots L1 under QEMU TCG (seconds) and needs the lab kernel
(built once by `qmpgmem lab kernel`, 15-25 minutes, then cached).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lab(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """``qmpgmem lab ARGS`` from the checkout, output captured (and echoed for the log)."""
    done = subprocess.run(
        [sys.executable, "-m", "qmpgmem", "lab", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout,
        env=dict(os.environ, COLUMNS="200"),
    )  # fmt: skip
    print(done.stdout)
    print(done.stderr, file=sys.stderr)
    return done


def statuses(report: Path) -> dict[tuple[str, str], str]:
    data: dict[str, Any] = json.loads(report.read_text())
    return {(r["scenario"], r["engine"]): r["status"] for r in data["results"]}


@pytest.fixture(scope="session")
def lab_kernel() -> str:
    """The default lab kernel's series, built (or found) once for the session."""
    from qmpgmem.lab.build import find_kernel

    kernel = find_kernel()
    if kernel is None:
        done = lab("kernel")
        assert done.returncode == 0, done.stderr
        kernel = find_kernel()
        assert kernel is not None
    return kernel.series
