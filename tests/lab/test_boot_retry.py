"""A death of L1's kernel (an Oops under TCG cannot be caused on demand, so LabMachine is
replaced here) is retried once, and said; any other failure, or a second death, is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import pytest

import qmpgmem.cli.lab as cli_lab
import qmpgmem.guest.image
import qmpgmem.lab.machine as machine_mod
from qmpgmem.lab.machine import LabError, LabOutcome


class FakeMachine:
    failures: list[str] = []
    boots = 0

    def __init__(self, config: Any) -> None:
        self.out_dir = Path("/nonexistent")

    def __enter__(self) -> FakeMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, job: str, on_line: Any) -> LabOutcome:
        FakeMachine.boots += 1
        if FakeMachine.failures:
            raise LabError(FakeMachine.failures.pop(0))
        return LabOutcome(rc=0, boot_seconds=1.0, job_seconds=1.0, wall_seconds=2.0)

    def keep_logs(self, logs: Path) -> list[Path]:
        return []


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    monkeypatch.setattr(machine_mod, "LabMachine", FakeMachine)
    monkeypatch.setattr(cli_lab, "_lab_kernel", lambda series: type("K", (), {"release": "x"})())
    monkeypatch.setattr(qmpgmem.guest.image, "guest_image", lambda kind: tmp_path)
    FakeMachine.boots = 0
    return {"series": None, "l1_qemu": "qemu", "l1_cpus": 2, "l1_memory": 4096,
            "l1_numa": 1, "timeout": 60, "lab_logs": tmp_path}  # fmt: skip


@pytest.mark.parametrize(
    "death",
    [
        "L1's kernel died: Oops: int3",
        "L1's CPU took a triple fault, logged in qemu-reset.log",
        "L1 did not boot to its job (L1's CPU took a triple fault, logged in qemu-reset.log)",
    ],
    ids=["oops", "triple-fault", "triple-fault-at-boot"],
)
def test_a_kernel_death_is_retried_once(fake: dict[str, Any], capsys: Any, death: str) -> None:
    FakeMachine.failures = [death]
    outcome, _ = cli_lab._boot("true", fake)
    assert outcome.rc == 0 and FakeMachine.boots == 2
    assert f"{death}; logs kept in" in capsys.readouterr().err


@pytest.mark.parametrize(
    "failures",
    [
        ["L1's kernel died: Oops", "L1's kernel died: Oops"],
        ["L1 did not finish within 60 s"],
        ["L1 stopped before its job ended: its QEMU exited with status 0"],
    ],
    ids=["twice", "timeout", "stop"],
)
def test_other_failures_are_not(fake: dict[str, Any], failures: list[str]) -> None:
    FakeMachine.failures = list(failures)
    with pytest.raises(click.exceptions.Exit):
        cli_lab._boot("true", fake)
    assert FakeMachine.boots == len(failures)
