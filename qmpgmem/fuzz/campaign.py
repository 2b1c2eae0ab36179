"""A fuzz run: generate K scenarios from one seed, run each, shrink the first mismatch.

Why stop at the first mismatch: the shrunk scenario is the product; once there is one, more
random scenarios mostly find the same fault again, and the run stays deterministic (scenario
i depends only on the seed, i and the target, and the shrinker on the pass/fail answers).
"""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

from qmpgmem.fuzz.dump import write_scenario
from qmpgmem.fuzz.execute import Executor, Failure, failure_of
from qmpgmem.fuzz.generate import DEFAULT_STEPS, generate_scenario
from qmpgmem.fuzz.shrink import DEFAULT_MAX_RUNS, Shrinker, mark_step
from qmpgmem.fuzz.target import FuzzTarget
from qmpgmem.report.result import ScenarioResult, Status
from qmpgmem.scenario.model import Scenario

__all__ = ["CaseResult", "FuzzOptions", "FuzzReport", "Mismatch", "run_fuzz"]

DEFAULT_OUT: Final = Path("qmpgmem-fuzz")


@dataclass(frozen=True)
class FuzzOptions:
    seed: int
    count: int
    steps: int = DEFAULT_STEPS
    out_dir: Path = DEFAULT_OUT
    max_shrink_runs: int = DEFAULT_MAX_RUNS
    #: QEMU binaries as given on the command line (for the reproduce command).
    qemu: tuple[str, ...] = ()


@dataclass(frozen=True)
class CaseResult:
    """One generated scenario and how its run ended."""

    index: int
    scenario: Scenario
    result: ScenarioResult

    @property
    def checks(self) -> int:
        """Verifies and host reads that compared something (the model's or explicit)."""
        return sum(1 for s in self.result.steps if s.expected is not None)

    @property
    def computed(self) -> int:
        """Of those, the ones whose expectation the memory model computed."""
        return sum(1 for s in self.result.steps if s.computed)


@dataclass(frozen=True)
class Mismatch:
    """The first scenario that did not pass, shrunk, and both written as YAML."""

    case: CaseResult
    failure: Failure
    original_path: Path
    shrunk: Scenario
    shrunk_path: Path
    #: The shrunk file's own run (loaded from ``shrunk_path``), as ``qmpgmem run`` does it.
    shrunk_result: ScenarioResult
    #: None when the rerun of the shrunk file did not fail the same way (a flaky fault).
    shrunk_failure: Failure | None
    shrink_runs: int
    shrink_exhausted: bool
    reproduce: str

    @property
    def reproduced(self) -> bool:
        """The shrunk file's own run failed like the original (at the step it follows)."""
        got = self.shrunk_failure
        return got is not None and got.signature[:3] == self.failure.signature[:3]


@dataclass
class FuzzReport:
    target: FuzzTarget
    options: FuzzOptions
    cases: list[CaseResult] = field(default_factory=list)
    mismatch: Mismatch | None = None
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.mismatch is None and all(c.result.status is Status.PASSED for c in self.cases)


def _header(options: FuzzOptions, target: FuzzTarget, index: int, what: str) -> list[str]:
    accel = f" --accel {target.accel}" if target.engine == "qemu" else ""
    return [
        f"{what} by qmpgmem fuzz --seed {options.seed} --engine {target.engine}{accel} "
        f"--steps {options.steps} (scenario {index} of {options.count}).",
    ]


def _reproduce(path: Path, target: FuzzTarget, options: FuzzOptions, name: str) -> str:
    argv = ["qmpgmem", "run", str(path), "--engine", target.engine]
    if target.engine == "qemu":
        argv += ["--accel", target.accel]
        for binary in options.qemu:
            argv += ["--qemu", binary]
    return shlex.join([*argv, "-k", name])


async def run_fuzz(
    options: FuzzOptions,
    target: FuzzTarget,
    on_case: Callable[[CaseResult], None] | None = None,
    on_shrink: Callable[[Scenario], None] | None = None,
) -> FuzzReport:
    """Generate, run and (on the first mismatch) shrink; the YAML files go to ``out_dir``."""
    t0 = time.monotonic()
    report = FuzzReport(target, options)
    artifacts = options.out_dir / "artifacts"
    with tempfile.TemporaryDirectory(prefix="qmpgmem-fuzz-") as work:
        executor = Executor(target, Path(work), artifacts)
        for index in range(1, options.count + 1):
            scenario = generate_scenario(target, options.seed, index, options.steps)
            result = await executor.run(scenario)
            case = CaseResult(index, scenario, result)
            report.cases.append(case)
            if on_case is not None:
                on_case(case)
            failure = failure_of(result)
            if failure is not None:
                report.mismatch = await _shrink(executor, options, target, case, failure, on_shrink)
                break
    report.duration_s = time.monotonic() - t0
    return report


async def _shrink(
    executor: Executor,
    options: FuzzOptions,
    target: FuzzTarget,
    case: CaseResult,
    failure: Failure,
    on_shrink: Callable[[Scenario], None] | None,
) -> Mismatch:
    out = options.out_dir
    original = case.scenario
    original_path = out / f"{original.name}.yaml"
    header = _header(options, target, case.index, "Generated")
    header.append(f"Failure: {failure.describe()}")
    write_scenario(original_path, original, header)
    runs_before = executor.runs

    # The shrinker follows the failing step by name: "the same way" means that step fails.
    start = original.model_copy(update={"name": f"{original.name}-min"})
    if failure.step:
        start = mark_step(start, failure.step - 1)
    want = replace(failure, name=start.steps[failure.step - 1].name if failure.step else None)

    async def still_fails(candidate: Scenario) -> bool:
        got = failure_of(await executor.run(candidate))
        return got is not None and got.signature == want.signature

    def valid(candidate: Scenario) -> bool:
        return target.problem(candidate) is None

    # Steps after the failing one never ran: drop them first (one run to confirm).
    if failure.step and failure.step < len(start.steps):
        truncated = start.model_copy(update={"steps": list(start.steps[: failure.step])})
        if valid(truncated) and await still_fails(truncated):
            start = truncated
    shrinker = Shrinker(
        still_fails, valid, options.max_shrink_runs, on_shrink, target.region_granule
    )
    shrunk = await shrinker.shrink(start)
    shrunk_path = out / f"{original.name}-min.yaml"
    runs = executor.runs - runs_before
    shrunk_header = _header(options, target, case.index, "Shrunk")
    shrunk_header.append(
        f"from {len(original.steps)} to {len(shrunk.scenario.steps)} steps in {runs} runs; "
        f"the original is {original_path.name}"
    )
    # The confirming run reads the file as ``qmpgmem run`` will; its outcome goes on top.
    result = await executor.run(shrunk.scenario, shrunk_path, shrunk_header)
    shrunk_failure = failure_of(result)
    if shrunk_failure is not None:
        shrunk_header.append(f"Failure: {shrunk_failure.describe()}")
    else:
        shrunk_header.append("Its confirming run PASSED: the fault did not reproduce.")
    write_scenario(shrunk_path, shrunk.scenario, shrunk_header)
    return Mismatch(
        case=case,
        failure=failure,
        original_path=original_path,
        shrunk=shrunk.scenario,
        shrunk_path=shrunk_path,
        shrunk_result=result,
        shrunk_failure=shrunk_failure,
        shrink_runs=runs,
        shrink_exhausted=shrunk.exhausted,
        reproduce=_reproduce(shrunk_path, target, options, shrunk.scenario.name),
    )
