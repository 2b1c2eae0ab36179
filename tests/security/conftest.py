"""Helpers of the security tests: scenario text and the qmpgmem CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

VM = """
vm:
  machine: microvm
  memory:
    - id: m0
      size: 16M
"""

#: A step that fails (seed 1 written, seed 2 expected): the run keeps its artifacts.
FAILING_STEPS = """
steps:
  - action: guest.write
    range: {region: m0, offset: 0, size: 4K}
    seed: 1
  - action: guest.verify
    range: {region: m0, offset: 0, size: 4K}
    expect: {pattern: 2}
"""


def qmpgmem(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qmpgmem.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
