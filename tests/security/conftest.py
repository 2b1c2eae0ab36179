"""Helpers of the security tests: scenario text and the qmpgmem CLI as a subprocess."""

from __future__ import annotations

from tests.conftest import qmpgmem_cli

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


#: the security tests' name for tests.conftest's runner of the CLI
qmpgmem = qmpgmem_cli
