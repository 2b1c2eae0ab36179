"""What each run took, kept between runs so ``run -j N`` starts the longest first
(qmpgmem/durations.py): the order, the file's robustness, and real runs through the session
and the CLI."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpgmem.durations import Durations, longest_first, run_key
from qmpgmem.report.result import ScenarioResult, Status
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import LoadedScenario
from qmpgmem.scheduler import run_planned
from tests.conftest import qmpgmem_cli

Make = Callable[..., LoadedScenario]


def test_unknown_runs_first_then_the_longest(make_scenario: Make) -> None:
    runs = [(make_scenario(n), RunOptions()) for n in ("a", "b", "c", "d")]
    keys = [run_key(loaded, opts) for loaded, opts in runs]
    known = Durations(None, {keys[0]: 0.1, keys[1]: 5.0, keys[3]: 0.1})
    assert longest_first(runs, known) == [2, 1, 0, 3]  # c never ran; a and d tie: plan order
    assert longest_first(runs, Durations(None)) == [0, 1, 2, 3]  # no history: the plan
    # the key tells engines, accelerators and pinned binaries apart
    kvm = RunOptions(engine="kvm")
    assert len({run_key(runs[0][0], o) for o in (RunOptions(), kvm, RunOptions(accel="tcg"))}) == 3
    assert run_key(runs[0][0], RunOptions(qemu="/q/a")) != run_key(runs[0][0], RunOptions())


async def test_the_scheduler_admits_in_the_order_given(make_scenario: Make) -> None:
    runs = [(make_scenario(n), RunOptions()) for n in ("a", "b", "c")]
    started: list[int] = []

    async def run_one(loaded: LoadedScenario, opts: RunOptions) -> ScenarioResult:
        await asyncio.sleep(0)
        return ScenarioResult(scenario=loaded.scenario.name, file="f", status=Status.PASSED)

    results = await run_planned(
        runs, run_one, jobs=1, order=[2, 0, 1], on_start=lambda i, s, o: started.append(i)
    )
    assert started == [2, 0, 1]
    assert [r.scenario for r in results] == ["a", "b", "c"]  # reports stay in plan order
    with pytest.raises(ValueError, match="each of the 3 runs once"):
        await run_planned(runs, run_one, order=[0, 0, 1])


def test_a_damaged_file_gives_no_history_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "durations.json"
    assert Durations.load(path).seconds == {}  # none yet: nothing to say
    assert caplog.records == []
    for text in ("{not json", "[1, 2]", '{"version": 99, "seconds": {}}', '{"version": 1}'):
        path.write_text(text)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert Durations.load(path).seconds == {}
        assert f"ignoring the runs' durations in {path}" in caplog.text, text
    # entries of the wrong type are dropped one by one, the rest kept
    path.write_text(json.dumps({"version": 1, "seconds": {"a": 1.5, "b": "x", "c": -1, "d": True}}))
    assert Durations.load(path).seconds == {"a": 1.5}


def test_save_keeps_what_another_run_wrote_meanwhile(make_scenario: Make, tmp_path: Path) -> None:
    path = tmp_path / "cache" / "durations.json"
    a, b = make_scenario("a"), make_scenario("b")
    mine, theirs = Durations.load(path), Durations.load(path)
    mine.record(a, RunOptions(), 2.0)
    theirs.record(b, RunOptions(), 3.0)
    theirs.save()
    mine.save()
    assert Durations.load(path).seconds == {
        run_key(a, RunOptions()): 2.0,
        run_key(b, RunOptions()): 3.0,
    }
    assert [p.name for p in path.parent.iterdir()] == ["durations.json"]  # no temp file left


def test_an_unwritable_file_is_logged_not_raised(
    make_scenario: Make, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "a-file").write_text("")
    durations = Durations.load(tmp_path / "a-file" / "durations.json")  # refused even to root
    durations.record(make_scenario("a"), RunOptions(), 1.0)
    with caplog.at_level(logging.WARNING):
        durations.save()
    assert "could not write the runs' durations" in caplog.text


# -- real runs ---------------------------------------------------------------------------------


@pytest.mark.kvm
@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_a_parallel_run_starts_the_longest_first_and_records_each(
    make_scenario: Make, tmp_path: Path
) -> None:
    from qmpgmem.session import host_context, run_scenarios

    scenarios = [make_scenario("a"), make_scenario("b"), make_scenario("slow", sleep=0.3)]
    options = RunOptions(engine="kvm", artifacts_dir=tmp_path / "art")
    path = tmp_path / "durations.json"
    ctx = await host_context(probe=False)

    async def starts(jobs: int) -> list[int]:
        order: list[int] = []
        report = await run_scenarios(
            scenarios,
            ctx,
            options,
            on_start=lambda i, s, o: order.append(i),
            jobs=jobs,
            durations=Durations.load(path),
        )
        assert [r.status for r in report.results] == [Status.PASSED] * 3, report.results
        return order

    assert await starts(2) == [0, 1, 2]  # nothing known: the plan's order
    recorded = Durations.load(path)
    costs = [recorded.cost(s, options) for s in scenarios]
    assert all(c is not None for c in costs), recorded.seconds
    assert costs[2] is not None and costs[2] > 0.3 > max(c or 0 for c in costs[:2])
    assert (await starts(2))[0] == 2  # the slow one, last in the plan, starts first
    assert await starts(1) == [0, 1, 2]  # one at a time: the plan, whatever the history


@pytest.mark.kvm
@pytest.mark.usefixtures("kvm_available", "no_leftovers")
def test_the_cli_keeps_durations_where_told_and_none_means_none(
    make_scenario: Make, tmp_path: Path
) -> None:
    make_scenario("a")
    path = tmp_path / "d.json"
    args = ("run", str(tmp_path / "a.yaml"), "--engine", "kvm", "-j", "2")
    r = qmpgmem_cli(*args, "--durations", str(path), cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert list(json.loads(path.read_text())["seconds"]) == [f"{tmp_path / 'a.yaml'}|a|kvm|auto|"]
    path.unlink()
    r = qmpgmem_cli(*args, cwd=tmp_path)  # the tests' environment says none
    assert r.returncode == 0 and not path.exists(), r.stdout + r.stderr
    plan_path = tmp_path / "plan.json"
    r = qmpgmem_cli(*args, "--durations", str(plan_path), "--plan", cwd=tmp_path)
    assert r.returncode == 0 and not plan_path.exists()  # a plan records nothing
