"""Scenario runs several at once (``run -j N``, qmpgmem/scheduler.py): admission by slots and
the memory budget, results in plan order, and every VM stopped when the run is cancelled.

The admission tests drive the scheduler with a run function of their own, so the order of
starts and ends is decided by the test, not by the load of the machine; the rest run real
VMs on both engines through ``run_scenarios`` and the CLI.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpgmem.report.result import ScenarioResult, Status
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import LoadedScenario, load_scenario
from qmpgmem.scheduler import default_budget, memory_need, run_planned
from tests.conftest import our_qemu_pids, qmpgmem_cli, scenario_text

MiB = 1 << 20


# -- admission, with a run function the test controls -------------------------------------------


class Recorder:
    """A run function whose runs end when the test says; records starts and ends in order."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.release: dict[str, asyncio.Event] = {}
        self.torn_down: list[str] = []

    async def run_one(self, loaded: LoadedScenario, opts: RunOptions) -> ScenarioResult:
        name = loaded.scenario.name
        self.events.append(f"start {name}")
        try:
            await self.release.setdefault(name, asyncio.Event()).wait()
        except asyncio.CancelledError:
            await asyncio.sleep(0.05)  # a teardown that takes a while
            self.torn_down.append(name)
            raise
        self.events.append(f"end {name}")
        return ScenarioResult(scenario=name, file=str(loaded.path), status=Status.PASSED)

    def end(self, name: str) -> None:
        self.release.setdefault(name, asyncio.Event()).set()

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)


async def test_runs_start_in_plan_order_within_the_slots(
    make_scenario: Callable[..., LoadedScenario],
) -> None:
    runs = [(make_scenario(n), RunOptions()) for n in ("a", "b", "c")]
    rec = Recorder()
    finished: list[int] = []
    task = asyncio.create_task(
        run_planned(runs, rec.run_one, jobs=2, on_result=lambda i, r: finished.append(i))
    )
    await rec.settle()
    assert rec.events == ["start a", "start b"]
    rec.end("b")  # the second finishes first: its slot goes to the third
    await rec.settle()
    assert rec.events == ["start a", "start b", "end b", "start c"]
    rec.end("c")
    await rec.settle()
    rec.end("a")
    results = await task
    assert [r.scenario for r in results] == ["a", "b", "c"]  # plan order
    assert finished == [1, 2, 0]  # completion order, with the plan's indices


async def test_budget_keeps_two_large_runs_apart(
    make_scenario: Callable[..., LoadedScenario],
) -> None:
    big1, big2 = make_scenario("big1", size="64M"), make_scenario("big2", size="64M")
    assert memory_need(big1) == 68 * MiB  # the guest's 4 MiB plus the region
    runs = [(big1, RunOptions()), (big2, RunOptions())]
    rec = Recorder()
    task = asyncio.create_task(run_planned(runs, rec.run_one, jobs=2, budget=100 * MiB))
    await rec.settle()
    assert rec.events == ["start big1"]  # 136 MiB together would exceed 100 MiB
    rec.end("big1")
    rec.end("big2")
    await task
    assert rec.events == ["start big1", "end big1", "start big2", "end big2"]

    # the same two within a budget that holds both: they overlap
    rec = Recorder()
    task = asyncio.create_task(run_planned(runs, rec.run_one, jobs=2, budget=200 * MiB))
    await rec.settle()
    assert rec.events == ["start big1", "start big2"]
    rec.end("big1")
    rec.end("big2")
    await task


async def test_a_run_larger_than_the_budget_runs_alone(
    make_scenario: Callable[..., LoadedScenario],
) -> None:
    small, huge, after = (
        make_scenario("small"),
        make_scenario("huge", size="64M"),
        make_scenario("after"),
    )
    runs = [(small, RunOptions()), (huge, RunOptions()), (after, RunOptions())]
    rec = Recorder()
    task = asyncio.create_task(run_planned(runs, rec.run_one, jobs=3, budget=32 * MiB))
    await rec.settle()
    assert rec.events == ["start small"]  # huge waits until nothing runs...
    rec.end("small")
    await rec.settle()
    assert rec.events[-1] == "start huge"  # ...then runs although it exceeds the budget...
    assert "start after" not in rec.events  # ...and nothing starts beside it
    rec.end("huge")
    rec.end("after")
    results = await task
    assert [r.scenario for r in results] == ["small", "huge", "after"]


def file_region_scenario(tmp_path: Path, name: str, target: Path) -> LoadedScenario:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        scenario_text(name).replace(
            "- id: m0\n      size: 16M",
            f"- id: m0\n      size: 16M\n      backend: file\n      path: {target}",
        )
    )
    loaded = load_scenario(path)
    assert loaded.scenario.vm.memory[0].outside_run_dir
    return loaded


async def test_runs_naming_one_host_file_never_overlap(
    tmp_path: Path, make_scenario: Callable[..., LoadedScenario]
) -> None:
    shared = tmp_path / "shared.mem"
    one = file_region_scenario(tmp_path, "one", shared)
    two = file_region_scenario(tmp_path, "two", tmp_path / "sub" / ".." / "shared.mem")
    own = file_region_scenario(tmp_path, "own", tmp_path / "own.mem")
    unsafe = RunOptions(allow_unsafe=True)
    rec = Recorder()
    runs = [(one, unsafe), (two, unsafe), (own, unsafe)]
    task = asyncio.create_task(run_planned(runs, rec.run_one, jobs=3))
    await rec.settle()
    assert rec.events == ["start one"]  # two names the same file (spelt otherwise): it waits
    rec.end("one")
    await rec.settle()
    assert rec.events == ["start one", "end one", "start two", "start own"]
    rec.end("two")
    rec.end("own")
    await task

    # refused without --allow-unsafe before anything is created: those overlap freely
    rec = Recorder()
    task = asyncio.create_task(
        run_planned([(one, RunOptions()), (two, RunOptions())], rec.run_one, jobs=2)
    )
    await rec.settle()
    assert rec.events == ["start one", "start two"]
    rec.end("one")
    rec.end("two")
    await task


async def test_raw_qemu_args_run_alone(
    tmp_path: Path, make_scenario: Callable[..., LoadedScenario]
) -> None:
    path = tmp_path / "raw.yaml"
    path.write_text(
        scenario_text("raw").replace("vm:\n", "vm:\n  qemu_args: ['-device', 'isa-debug-exit']\n")
    )
    raw, before, after = load_scenario(path), make_scenario("before"), make_scenario("after")
    unsafe = RunOptions(allow_unsafe=True)
    rec = Recorder()
    task = asyncio.create_task(
        run_planned([(before, unsafe), (raw, unsafe), (after, unsafe)], rec.run_one, jobs=3)
    )
    await rec.settle()
    assert rec.events == ["start before"]
    rec.end("before")
    await rec.settle()
    assert rec.events[-1] == "start raw" and "start after" not in rec.events
    rec.end("raw")
    rec.end("after")
    await task
    # on the kvm engine qemu_args mean nothing: no reason to run alone
    rec = Recorder()
    kvm = RunOptions(engine="kvm", allow_unsafe=True)
    task = asyncio.create_task(run_planned([(raw, kvm), (after, kvm)], rec.run_one, jobs=2))
    await rec.settle()
    assert rec.events == ["start raw", "start after"]
    rec.end("raw")
    rec.end("after")
    await task


async def test_cancel_waits_for_every_teardown(
    make_scenario: Callable[..., LoadedScenario],
) -> None:
    runs = [(make_scenario(n), RunOptions()) for n in ("a", "b", "c")]
    rec = Recorder()
    task = asyncio.create_task(run_planned(runs, rec.run_one, jobs=2))
    await rec.settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(rec.torn_down) == ["a", "b"]  # both finished tearing down first
    assert rec.events == ["start a", "start b"]  # c never started


async def test_a_callback_that_raises_stops_the_other_runs(
    make_scenario: Callable[..., LoadedScenario],
) -> None:
    runs = [(make_scenario(n), RunOptions()) for n in ("a", "b")]
    rec = Recorder()

    def on_result(index: int, result: ScenarioResult) -> None:
        raise BrokenPipeError("the reader went away")

    task = asyncio.create_task(run_planned(runs, rec.run_one, jobs=2, on_result=on_result))
    await rec.settle()
    rec.end("a")
    with pytest.raises(BrokenPipeError):
        await task
    assert rec.torn_down == ["b"]


@pytest.mark.parametrize("jobs, budget", [(0, None), (1, -1)])
async def test_bad_jobs_or_budget_refused(
    make_scenario: Callable[..., LoadedScenario], jobs: int, budget: int | None
) -> None:
    rec = Recorder()
    with pytest.raises(ValueError, match=r"jobs must be|cannot be negative"):
        await run_planned(
            [(make_scenario("a"), RunOptions())], rec.run_one, jobs=jobs, budget=budget
        )
    assert rec.events == []


def test_default_budget_is_half_of_mem_available(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:   2000000 kB\n")
    assert default_budget(meminfo) == 1000000 * 1024
    meminfo.write_text("MemTotal:       24000000 kB\n")
    assert default_budget(meminfo) is None  # unknown: no bound rather than a guess


# -- real VMs ------------------------------------------------------------------------------------


@pytest.mark.qemu
@pytest.mark.kvm
@pytest.mark.usefixtures("qemu_binary", "kvm_available", "no_leftovers")
async def test_real_runs_overlap_and_report_in_plan_order(
    make_scenario: Callable[..., LoadedScenario], tmp_path: Path
) -> None:
    from qmpgmem.session import host_context, run_scenarios

    slow, quick = make_scenario("slow", sleep=1.5), make_scenario("quick")
    options = [RunOptions(engine=e, artifacts_dir=tmp_path / "a") for e in ("qemu", "kvm")]
    ctx = await host_context()
    events: list[tuple[str, int]] = []
    report2 = await run_scenarios(
        [slow, quick],
        ctx,
        options,
        on_start=lambda i, s, o: events.append(("start", i)),
        on_result=lambda i, r: events.append(("end", i)),
        jobs=2,
    )
    report1 = await run_scenarios([slow, quick], ctx, options, jobs=1)
    assert [(r.scenario, r.engine) for r in report2.results] == [
        ("slow", "qemu"),
        ("quick", "qemu"),
        ("slow", "kvm"),
        ("quick", "kvm"),
    ]
    assert [r.status for r in report2.results] == [r.status for r in report1.results]
    assert all(r.status is Status.PASSED for r in report2.results), report2.results
    # the quick qemu run started beside the slow one, and ended while the slow one ran
    assert events[:2] == [("start", 0), ("start", 1)]
    assert events.index(("end", 1)) < events.index(("end", 0))


def qmpgmem(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return qmpgmem_cli(*args, cwd=cwd, timeout=180)  # several VMs, one after another at worst


@pytest.mark.qemu
@pytest.mark.usefixtures("qemu_binary", "no_leftovers")
def test_cli_lines_as_they_finish_reports_in_order(tmp_path: Path) -> None:
    (tmp_path / "sc").mkdir()
    (tmp_path / "sc" / "a-slow.yaml").write_text(scenario_text("a-slow", sleep=4))
    (tmp_path / "sc" / "b-quick.yaml").write_text(scenario_text("b-quick"))
    out: dict[int, dict[str, object]] = {}
    for jobs in (1, 2):
        res = qmpgmem(
            "run", "sc", "-j", str(jobs), "--json", f"r{jobs}.json", "--junit", f"j{jobs}.xml",
            cwd=tmp_path,
        )  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        out[jobs] = json.loads((tmp_path / f"r{jobs}.json").read_text())
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("[")]
        if jobs == 2:  # the quick one's line first, numbered by its place in the plan
            assert lines[0].startswith("[2/2] PASSED  b-quick"), res.stdout
            assert lines[1].startswith("[1/2] PASSED  a-slow"), res.stdout
        else:
            assert lines[0].startswith("[1/2] PASSED  a-slow"), res.stdout
        junit = (tmp_path / f"j{jobs}.xml").read_text()
        assert junit.index('name="a-slow') < junit.index('name="b-quick'), junit
    for jobs in (1, 2):
        results = out[jobs]["results"]
        assert isinstance(results, list)
        assert [(r["scenario"], r["status"]) for r in results] == [
            ("a-slow", "passed"),
            ("b-quick", "passed"),
        ]


@pytest.mark.qemu
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
@pytest.mark.usefixtures("qemu_binary", "no_leftovers")
def test_signal_during_parallel_run_stops_every_vm(tmp_path: Path, sig: signal.Signals) -> None:
    (tmp_path / "sc").mkdir()
    for name in ("long-1", "long-2", "never-started"):
        (tmp_path / "sc" / f"{name}.yaml").write_text(scenario_text(name, sleep=60))
    before = our_qemu_pids()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmpgmem.cli", "run", "sc", "-j", "2", "--json", "r.json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(our_qemu_pids() - before) < 2:
        time.sleep(0.05)
    assert len(our_qemu_pids() - before) >= 2, "two QEMUs never ran at once"
    time.sleep(0.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert not (our_qemu_pids() - before), "QEMU left running"
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["complete"] is False and report["interrupted"] == sig.name
    assert [(r["scenario"], r["status"]) for r in report["results"]] == [
        ("long-1", "error"),
        ("long-2", "error"),
    ]
    assert all(r["reason"].startswith(f"interrupted ({sig.name})") for r in report["results"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["-j", "0"], "Invalid value for '-j' / '--jobs': 0 is not in the range x>=1"),
        (["-j", "two"], "Invalid value for '-j' / '--jobs': 'two' is not a valid integer"),
        (["--memory-budget", "abc"], "Invalid value for '--memory-budget': expected a size"),
    ],
)
def test_bad_jobs_and_budget_are_usage_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "a.yaml").write_text(scenario_text("a"))
    res = qmpgmem("run", "a.yaml", *args, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr, res.stderr
    assert "PASSED" not in res.stdout  # nothing ran
