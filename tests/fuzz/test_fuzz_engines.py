"""``qmpgmem fuzz`` on the real engines: seed 1 matches the model on QEMU and on the KVM
engine, and a model rule broken on purpose is caught, shrunk to a few steps and written as a
YAML file that ``qmpgmem run`` reproduces (and that passes once the rule is right again)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmpgmem.cli.group import cli
from qmpgmem.engines.factory import build_engine
from qmpgmem.fuzz.campaign import FuzzOptions, run_fuzz
from qmpgmem.fuzz.execute import failure_of
from qmpgmem.fuzz.shrink import FAILING_STEP
from qmpgmem.fuzz.target import fuzz_target
from qmpgmem.model.memory import MemoryModel
from qmpgmem.report.result import Status
from qmpgmem.runner import RunOptions, ScenarioRun
from qmpgmem.scenario.loader import load_scenario
from qmpgmem.session import host_context
from tests.conftest import qmpgmem_cli
from tests.engines.kvm.helpers import needs_gmem

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "no_leftovers")]


def _fuzz_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return qmpgmem_cli("fuzz", *args, cwd=cwd, timeout=300)


def _progress(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("[")]


@pytest.mark.parametrize("engine", ["qemu", pytest.param("kvm", marks=[pytest.mark.kvm])])
def test_seed_1_count_50_matches_the_model(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if engine == "kvm":
        request.getfixturevalue("kvm_available")
    out = tmp_path / "out"
    res = _fuzz_cli(
        "--seed", "1", "--count", "50", "--engine", engine, "--out", str(out), cwd=tmp_path
    )
    assert res.returncode == 0, res.stdout + res.stderr
    lines = _progress(res.stdout)
    assert len(lines) == 50 and all(" MATCH " in line for line in lines), res.stdout
    assert f"fuzz-{engine}-s1-50 12 steps" in lines[-1]
    assert "all 50 scenarios matched the model" in res.stdout
    assert not list(out.glob("*.yaml")) if out.exists() else True


def test_same_seed_same_run(tmp_path: Path) -> None:
    runs = [
        _fuzz_cli(
            "--seed", "4", "--count", "6", "--steps", "20", "--out", str(tmp_path), cwd=tmp_path
        )
        for _ in range(2)
    ]
    for res in runs:
        assert res.returncode == 0, res.stdout + res.stderr

    def shape(stdout: str) -> list[str]:  # drop the timings
        return [line.rsplit(" ", 1)[0] for line in _progress(stdout)]

    assert shape(runs[0].stdout) == shape(runs[1].stdout)
    assert len(shape(runs[0].stdout)) == 6


def test_bad_input_exits_2(tmp_path: Path) -> None:
    runner = CliRunner()
    for args in (
        ["--seed", "1", "--count", "0"],
        ["--seed", "-1"],
        ["--count", "3"],
        ["--seed", "1", "--steps", "0"],
        ["--seed", "1", "--engine", "xen"],
        ["--seed", "1", "--engine", "kvm", "--accel", "tcg"],
    ):
        result = runner.invoke(cli, ["fuzz", *args, "--out", str(tmp_path)])
        assert result.exit_code == 2, (args, result.output)


def test_write_that_changes_nothing_is_caught_shrunk_and_reproduced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broken rule: the model believes a guest write does not change memory."""
    monkeypatch.setattr(MemoryModel, "write", lambda self, region, off, size, seed: None)
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["fuzz", "--seed", "1", "--count", "20", "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert "MISMATCH" in result.output
    reproduce = next(
        line.removeprefix("reproduce: ")
        for line in result.output.splitlines()
        if line.startswith("reproduce: ")
    )
    argv = shlex.split(reproduce)
    assert argv[:2] == ["qmpgmem", "run"]
    path = Path(argv[2])
    assert path.parent == out and path.name.endswith("-min.yaml")
    assert str(path) in result.output
    shrunk = load_scenario(path).scenario
    actions = [s.action for s in shrunk.steps]
    assert 2 <= len(actions) <= 4, actions
    assert "guest.write" in actions and actions[-1] in ("guest.verify", "host.read")
    assert shrunk.steps[-1].name == FAILING_STEP
    # the original is written next to it and is valid too
    original = path.with_name(path.name.removesuffix("-min.yaml") + ".yaml")
    check = runner.invoke(cli, ["validate", str(path), str(original)])
    assert check.exit_code == 0, check.output
    assert len(load_scenario(original).scenario.steps) == 12

    # the printed command reproduces the mismatch while the rule is broken ...
    rerun = runner.invoke(cli, [*argv[1:], "--artifacts", str(tmp_path / "arts")])
    assert rerun.exit_code == 1, rerun.output
    assert "expected zero" in rerun.output
    # ... and passes once the rule is right again: the fault was the rule, nothing else
    monkeypatch.undo()
    rerun = runner.invoke(cli, [*argv[1:], "--artifacts", str(tmp_path / "arts")])
    assert rerun.exit_code == 0, rerun.output


@pytest.mark.kvm
@pytest.mark.usefixtures("kvm_available")
@needs_gmem
async def test_punch_hole_that_changes_nothing_on_the_kvm_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broken rule: the model believes punching a guest_memfd hole keeps the content."""
    monkeypatch.setattr(MemoryModel, "punch_hole", lambda self, region, off, size: None)
    host = await host_context()
    target = fuzz_target("kvm", host)
    report = await run_fuzz(FuzzOptions(seed=1, count=30, out_dir=tmp_path), target)
    m = report.mismatch
    assert m is not None and not report.ok
    assert m.failure.status is Status.FAILED and m.failure.expected is not None
    actions = [s.action for s in m.shrunk.steps]
    assert "host.gmem_punch_hole" in actions and len(actions) <= 4, actions
    assert m.reproduced and not m.shrink_exhausted
    assert len(m.case.scenario.steps) == 12 and m.original_path.exists()

    loaded = load_scenario(m.shrunk_path)
    assert loaded.scenario == m.shrunk
    options = RunOptions(engine="kvm", artifacts_dir=tmp_path / "arts")
    broken = await ScenarioRun(loaded, host, options, build_engine).run()
    failure = failure_of(broken)
    assert failure is not None and m.shrunk_failure is not None
    assert failure.signature == m.shrunk_failure.signature
    monkeypatch.undo()
    fixed = await ScenarioRun(loaded, host, options, build_engine).run()
    assert fixed.status is Status.PASSED, fixed.reason
