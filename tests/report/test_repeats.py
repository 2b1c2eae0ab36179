"""Folding the runs of ``run --repeat N`` into one result: flaky when they differ, the
statuses and the spread of times in either case. Results built by hand; the real runs are in
tests/test_run_matrix.py."""

from __future__ import annotations

from qmpgmem.report.repeats import fold_repeats
from qmpgmem.report.result import ScenarioResult, Status, Summary


def run(
    status: Status, index: int | None, seconds: float, name: str = "smoke", reason: str = ""
) -> ScenarioResult:
    return ScenarioResult(
        id=f"{name} [qemu, QEMU 10.0.2 qemu-system-x86_64]",
        scenario=name,
        file=f"{name}.yaml",
        status=status,
        reason=reason,
        duration_s=seconds,
        engine="qemu",
        repeat_index=index,
        artifacts=f"arts/{name}-{index}" if status is not Status.PASSED else None,
    )


def test_runs_that_agree_keep_their_status_with_every_run_recorded() -> None:
    (folded,) = fold_repeats([run(Status.PASSED, i, t) for i, t in enumerate((0.3, 0.1, 0.2))])
    assert folded.status is Status.PASSED
    assert folded.repeats is not None and folded.repeats.runs == 3
    assert folded.repeats.statuses == [Status.PASSED] * 3
    r = folded.repeats
    assert (r.duration_min_s, r.duration_median_s, r.duration_max_s) == (0.1, 0.2, 0.3)
    assert folded.duration_s == 0.2  # the median stands for the result
    assert folded.repeat_index is None


def test_runs_that_differ_are_flaky_with_the_first_failure_shown() -> None:
    runs = [
        run(Status.PASSED, 0, 0.2),
        run(Status.FAILED, 1, 0.4, reason="step 1: expected zeros"),
        run(Status.PASSED, 2, 0.2),
        run(Status.ERROR, 3, 0.9, reason="QEMU exited"),
        run(Status.PASSED, 4, 0.3),
    ]
    (folded,) = fold_repeats(runs[::-1])  # in whatever order they finished
    assert folded.status is Status.FLAKY
    assert folded.repeats is not None
    assert folded.repeats.statuses == [
        Status.PASSED, Status.FAILED, Status.PASSED, Status.ERROR, Status.PASSED,
    ]  # fmt: skip
    assert folded.reason == (
        "passed 3, failed 1, error 1 of 5 runs; run 2 failed: step 1: expected zeros"
    )
    assert folded.artifacts == "arts/smoke-1"  # the first run worth reading
    assert folded.repeats.spread() == "0.20/0.30/0.90 s (min/median/max)"
    assert Summary.of([folded]).flaky == 1
    assert "1 flaky" in Summary.of([folded]).counts()
    assert not folded.status.ok  # a flaky result fails the run


def test_a_run_that_fails_every_time_is_failed_not_flaky() -> None:
    (folded,) = fold_repeats([run(Status.FAILED, i, 0.1, reason="broken") for i in range(3)])
    assert folded.status is Status.FAILED and folded.reason == "broken"
    assert folded.repeats is not None and folded.repeats.runs == 3


def test_each_scenario_folds_apart_and_unrepeated_results_pass_unchanged() -> None:
    once = run(Status.SKIPPED, None, 0.0, name="snp", reason="needs sev-snp")
    results = [
        run(Status.PASSED, 0, 0.1, "a"),
        once,
        run(Status.FAILED, 0, 0.1, "b"),
        run(Status.PASSED, 1, 0.1, "a"),
        run(Status.FAILED, 1, 0.1, "b"),
    ]
    folded = fold_repeats(results)
    assert [(r.scenario, r.status) for r in folded] == [
        ("a", Status.PASSED), ("snp", Status.SKIPPED), ("b", Status.FAILED),
    ]  # fmt: skip
    assert folded[1] is once and once.repeats is None
    assert "flaky" not in Summary.of(folded).counts()
