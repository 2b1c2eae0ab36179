"""``lab run --kernel A --kernel B``: the lab's kernels as a second axis, without an L1.

The merge (qmpgmem/lab/merge.py) on reports shaped as each L1's inner run writes them, how
compare and aggregate keep the kernels apart, and the command's own refusals. The real two
boots are in tests_lab/test_lab_kernels.py. An L1 that fails on the second kernel cannot be
caused on demand, so that one test replaces LabMachine (as tests/lab/test_boot_retry.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import qmpgmem.cli.lab as cli_lab
import qmpgmem.fasthash.build
import qmpgmem.guest.image
import qmpgmem.lab.machine as machine_mod
from qmpgmem.cli.group import cli
from qmpgmem.lab.machine import LabError, LabOutcome
from qmpgmem.lab.merge import merge_kernel_reports
from qmpgmem.report.aggregate import aggregate
from qmpgmem.report.compare import ChangeKind, compare_reports
from qmpgmem.report.envelope import RunDocument, document_json
from qmpgmem.report.inputs import LoadedReport
from qmpgmem.report.result import (
    Gate,
    HostInfo,
    ScenarioResult,
    Status,
    Summary,
    result_id,
)

SCENARIOS = ("conversion-back-to-back", "kernel-gmem-allocate")


def inner_report(
    release: str, statuses: dict[str, Status] | None = None, gate: Gate | None = None
) -> RunDocument:
    """What the inner ``qmpgmem run --json`` writes in an L1 of kernel ``release``."""
    results = [
        ScenarioResult(
            id=result_id(name, "kvm"), scenario=name, file=f"scenarios/{name}.yaml",
            status=(statuses or {}).get(name, Status.PASSED), engine="kvm", accel="kvm",
        )
        for name in SCENARIOS
    ]  # fmt: skip
    host = HostInfo(hostname="lab-l1", kernel_release=release, kvm_backend="kvm_amd",
                    cpu="emulated (QEMU TCG, qmpgmem lab)", engine="kvm")  # fmt: skip
    return RunDocument(summary=Summary.of(results), results=results, host=host, gate=gate)


def loaded(doc: RunDocument, path: str) -> LoadedReport:
    return LoadedReport(path=path, kind="run", doc=RunDocument.of(doc))


def test_each_result_names_its_kernel_in_one_report() -> None:
    merged = merge_kernel_reports([inner_report("7.2.13"), inner_report("6.12.118")])
    assert [r.id for r in merged.results] == [
        f"{name} [kvm, kernel {k}]" for k in ("7.2.13", "6.12.118") for name in SCENARIOS
    ]
    assert [r.kernel for r in merged.results] == ["7.2.13"] * 2 + ["6.12.118"] * 2
    assert merged.summary.passed == 4 and merged.complete
    assert merged.host.kernel_release == "7.2.13, 6.12.118"


def test_compare_and_aggregate_keep_the_kernels_apart() -> None:
    """A scenario that breaks on one kernel only is one new failure naming that kernel; with
    the kernels folded into one key it would look like a worst-of-two instead."""
    good = merge_kernel_reports([inner_report("7.2.13"), inner_report("6.12.118")])
    bad = merge_kernel_reports(
        [inner_report("7.2.13"), inner_report("6.12.118", {SCENARIOS[0]: Status.FAILED})]
    )
    itself = compare_reports(loaded(good, "a.json"), loaded(good, "a.json"))
    assert itself.changes == [] and itself.unchanged == 4
    cmp = compare_reports(loaded(good, "base.json"), loaded(bad, "new.json"))
    runs = [(c.kind, c.subject) for c in cmp.changes if c.kind is not ChangeKind.HOST]
    assert runs == [(ChangeKind.NEW_FAILURE, f"{SCENARIOS[0]} [kvm, kernel 6.12.118]")]
    rows = aggregate([loaded(bad, "new.json")]).rows
    assert sorted(r.id for r in rows) == sorted(
        f"{name} [kvm, kernel {k}]" for k in ("7.2.13", "6.12.118") for name in SCENARIOS
    )


def test_the_gate_passes_only_when_every_kernel_passed_it() -> None:
    ok = Gate(passed=True, verdict="strict: passed — nothing skipped", baseline="no baseline")
    failed = Gate(passed=False, verdict="strict: failed — 1 unexpected skip",
                  baseline="no baseline")  # fmt: skip
    merged = merge_kernel_reports(
        [inner_report("7.2.13", gate=ok), inner_report("6.12.118", gate=failed)]
    )
    assert merged.gate is not None and not merged.gate.passed and not merged.ok
    assert merged.gate.verdict == (
        "kernel 7.2.13: strict: passed — nothing skipped; "
        "kernel 6.12.118: strict: failed — 1 unexpected skip"
    )
    both = merge_kernel_reports([inner_report("7.2.13", gate=ok), inner_report("6.12", gate=ok)])
    assert both.gate is not None and both.gate.passed


def test_expected_skips_are_refused_with_several_kernels() -> None:
    res = CliRunner().invoke(
        cli,
        ["lab", "run", "--kernel", "7.2", "--kernel", "6.12", "scenarios/conversion",
         "--write-expected-skips", "x.yaml"],
    )  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "--write-expected-skips takes one lab kernel" in res.output


class FakeMachine:
    """L1 whose job "ran" and wrote the inner report, or that fails to boot."""

    plan: list[str | None] = []

    def __init__(self, config: Any) -> None:
        self.out_dir = FakeMachine.root / str(len(FakeMachine.plan))
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.release = config.kernel.release

    root = Path("/nonexistent")

    def __enter__(self) -> FakeMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def run(self, job: str, on_line: Any) -> LabOutcome:
        failure = FakeMachine.plan.pop(0)
        if failure:
            raise LabError(failure)
        (self.out_dir / "run.json").write_text(document_json(inner_report(self.release)))
        return LabOutcome(rc=0, boot_seconds=1.0, job_seconds=1.0, wall_seconds=2.0)

    def keep_logs(self, logs: Path) -> list[Path]:
        return []


@pytest.fixture
def fake_l1(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    releases = {"7.2": "7.2.13", "6.12": "6.12.118"}
    monkeypatch.setattr(machine_mod, "LabMachine", FakeMachine)
    monkeypatch.setattr(
        cli_lab, "_lab_kernel", lambda series: type("K", (), {"release": releases[series]})()
    )
    monkeypatch.setattr(qmpgmem.guest.image, "guest_image", lambda kind: tmp_path)
    monkeypatch.setattr(qmpgmem.fasthash.build, "load", lambda: None)
    FakeMachine.root = tmp_path / "l1"
    return tmp_path


@pytest.mark.parametrize("second", [None, "L1 did not finish within 60 s"], ids=["ok", "fails"])
def test_one_boot_per_kernel_and_one_merged_report(fake_l1: Path, second: str | None) -> None:
    FakeMachine.plan = [None, second]
    out = fake_l1 / "k.json"
    res = CliRunner().invoke(
        cli,
        ["lab", "run", "--kernel", "7.2", "--kernel", "6.12", "--lab-logs", str(fake_l1),
         "scenarios/conversion", "--json", str(out)],
    )  # fmt: skip
    doc = json.loads(out.read_text())
    kernels = [r["kernel"] for r in doc["results"]]
    if second is None:
        assert res.exit_code == 0, res.output
        assert kernels == ["7.2.13"] * 2 + ["6.12.118"] * 2 and doc["complete"]
        assert "lab: 2 kernels: 4 passed" in res.output
    else:  # the kernels done so far, and which one failed
        assert res.exit_code == 1, res.output
        assert kernels == ["7.2.13"] * 2
        assert doc["complete"] is False
        assert doc["interrupted"] == "L1 of lab kernel 6.12 failed"
    assert FakeMachine.plan == []
