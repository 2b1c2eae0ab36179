"""What a step's budget is, and when a passed run warns that it checked nothing."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from qmpgmem.report.result import Status, StepResult
from qmpgmem.scenario.model import Step
from qmpgmem.step_runner import step_timeout, unchecked_warnings

STEP: TypeAdapter[Step] = TypeAdapter(Step)
RNG = {"region": "m0", "size": 4096}


def step(**kw: Any) -> Step:
    return STEP.validate_python(kw)


@pytest.mark.parametrize(
    ("data", "budget"),
    [
        ({"action": "guest.write", "range": RNG, "seed": 1}, 30.0),
        ({"action": "guest.write", "range": RNG, "seed": 1, "timeout": 2}, 2.0),
        ({"action": "sleep", "seconds": 5}, 31.0),
        ({"action": "sleep", "seconds": 60}, 61.0),  # longer than timeouts.step: as asked
        ({"action": "sleep", "seconds": 5, "timeout": 1}, 1.0),  # its own timeout bounds it
        ({"action": "wait_event", "event": "STOP"}, 6.0),
        ({"action": "wait_event", "event": "STOP", "timeout": 60}, 61.0),
    ],
)
def test_step_timeout(data: dict[str, Any], budget: float) -> None:
    assert step_timeout(step(**data), 30.0) == budget


def done(index: int, expected: str | None) -> StepResult:
    return StepResult(index=index, action="x", status=Status.PASSED, expected=expected)


WRITE = step(action="guest.write", range=RNG, seed=1)
VERIFY = step(action="guest.verify", range=RNG)
READ = step(action="host.read", range=RNG)
QMP = step(action="qmp", command="query-status")
PARALLEL = step(
    action="guest.parallel",
    steps=[{"action": "guest.write", "range": RNG, "seed": 1}, {"action": "guest.verify",
           "vcpu": 1, "range": {"region": "m0", "offset": 8192, "size": 4096}}],
)  # fmt: skip


def test_every_read_recorded_warns() -> None:
    (warning,) = unchecked_warnings(
        [WRITE, QMP, VERIFY, READ], [done(1, None), done(2, None), done(3, None), done(4, None)]
    )
    assert "could not predict any of the 2 read(s) (steps 3, 4)" in warning


@pytest.mark.parametrize(
    ("steps", "results"),
    [
        ([WRITE, QMP], [done(1, None), done(2, None)]),  # no read: nothing to warn about
        ([WRITE, VERIFY, READ], [done(1, None), done(2, "0x1 (zero)"), done(3, None)]),
        ([PARALLEL], [done(1, "steps[1]: 0x1 (zero)")]),
    ],
)
def test_one_checked_read_or_none_at_all_does_not_warn(
    steps: list[Step], results: list[StepResult]
) -> None:
    assert unchecked_warnings(steps, results) == []


def test_a_parallel_verify_is_a_read() -> None:
    (warning,) = unchecked_warnings([PARALLEL], [done(1, None)])
    assert "(step 1)" in warning
