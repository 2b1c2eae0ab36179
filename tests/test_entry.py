"""qmpgmem's entry point called from Python: it ends in SystemExit and hands back the
caller's signal handlers (only the console script leaves the process with os._exit)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from qmpgmem.cli import main

SMOKE = Path(__file__).resolve().parents[1] / "scenarios/basic/smoke.yaml"


def test_a_call_from_python_raises_systemexit_and_restores_handlers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(SystemExit) as done:
        main(["validate", str(SMOKE)])
    assert done.value.code == 0
    assert capsys.readouterr().out == "1 scenario valid\n"
    assert {sig: signal.getsignal(sig) for sig in before} == before
    with pytest.raises(SystemExit) as bad:
        main(["validate", "/no/such/file.yaml"])
    assert bad.value.code == 2
