"""Run one generated scenario through the ordinary runner, and say how it failed.

Why through a file: every scenario is written as YAML and loaded back before it runs, so the
run is the one ``qmpgmem run FILE`` would do, and a scenario the dumper cannot write faithfully
is caught at once, not when someone tries to reproduce a mismatch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qmpgmem.engines.factory import build_engine
from qmpgmem.fuzz.dump import write_scenario
from qmpgmem.fuzz.target import FuzzTarget
from qmpgmem.report.result import ScenarioResult, Status
from qmpgmem.runner import RunOptions, ScenarioRun
from qmpgmem.scenario.model import Scenario

__all__ = ["Executor", "Failure", "failure_of"]


@dataclass(frozen=True)
class Failure:
    """How a run did not pass: status, the step it stopped at, what was expected and seen."""

    status: Status
    #: 1-based index of the step that did not pass; 0 when the run ended outside a step.
    step: int
    action: str
    message: str
    expected: str | None = None
    seen: str | None = None
    #: The failing step's ``name`` (the shrinker names the step it follows).
    name: str | None = None

    @property
    def signature(self) -> tuple[str, str, bool, str | None]:
        """What "fails the same way" compares: status, the failing step's action and name,
        and whether the step compared an expectation with what was seen (a mismatch, as
        opposed to, say, an ``unchanged`` without a reference)."""
        return (str(self.status), self.action, self.expected is not None, self.name)

    def describe(self) -> str:
        where = f"step {self.step} ({self.action})" if self.step else "the run"
        return f"{where} {self.status}: {self.message}"


def failure_of(result: ScenarioResult) -> Failure | None:
    """None when the run passed; else what went wrong (a skip is a failure of the fuzzer)."""
    if result.status is Status.PASSED:
        return None
    for step in result.steps:
        if step.status is not Status.PASSED:
            return Failure(
                result.status,
                step.index,
                step.action,
                step.message or result.reason,
                step.expected,
                step.seen,
                step.name,
            )
    return Failure(result.status, 0, "", result.reason)


class Executor:
    """Runs scenarios for one target: writes each to ``work_dir``, loads it, runs it."""

    def __init__(
        self, target: FuzzTarget, work_dir: Path, artifacts_dir: Path, keep_run_dirs: bool = False
    ) -> None:
        self.target = target
        self.work_dir = work_dir
        self.options = RunOptions(
            engine=target.engine,
            accel=target.accel if target.engine == "qemu" else None,
            artifacts_dir=artifacts_dir,
            keep_run_dirs=keep_run_dirs,
        )
        self.runs = 0

    async def run(
        self, scenario: Scenario, path: Path | None = None, header: Sequence[str] = ()
    ) -> ScenarioResult:
        """Run ``scenario`` as the file ``path`` (default: ``work_dir/<name>.yaml``)."""
        path = path or self.work_dir / f"{scenario.name}.yaml"
        loaded = write_scenario(path, scenario, header)
        self.runs += 1
        return await ScenarioRun(loaded, self.target.host, self.options, build_engine).run()
