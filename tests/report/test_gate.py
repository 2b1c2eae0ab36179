"""The strict gate and its expected-skips baseline, on results built by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpgmem.report.expected_skips import (
    ExpectedSkips,
    ExpectedSkipsError,
    write_expected_skips,
)
from qmpgmem.report.gate import judge
from qmpgmem.report.result import ScenarioResult, Status


def result(
    name: str, status: Status, reason: str = "", engine: str = "qemu", **kw: object
) -> ScenarioResult:
    return ScenarioResult(
        scenario=name, file=f"{name}.yaml", status=status, reason=reason, engine=engine, **kw
    )  # type: ignore[arg-type]


SKIP_SNP = result("snp", Status.SKIPPED, "needs vm_type:sev-snp; VM types: default [*]")
SKIP_QMP = result("qmp", Status.SKIPPED, "step 1: step qmp needs the qemu engine", engine="kvm")
PASS = result("smoke", Status.PASSED)


def test_no_baseline_expects_no_skip() -> None:
    gate = judge([PASS, SKIP_SNP], ExpectedSkips())
    assert not gate.passed
    assert gate.verdict == "strict: failed — 1 unexpected skip (no --expect-skips file)"
    assert [v.scenario for v in gate.violations] == ["snp"]
    assert judge([PASS], ExpectedSkips()).verdict == "strict: passed — nothing skipped"


def test_written_baseline_matches_exactly_even_with_glob_characters(tmp_path: Path) -> None:
    path = tmp_path / "class.yaml"
    assert write_expected_skips([PASS, SKIP_SNP, SKIP_QMP], path, "kvm_pvm", "a header") == 2
    baseline = ExpectedSkips.load(path)
    assert baseline.host_class == "kvm_pvm" and path.read_text().startswith("# a header\n")
    gate = judge([PASS, SKIP_SNP, SKIP_QMP], baseline)
    assert gate.passed, gate.violations
    # the reason's literal "[*]" was escaped: another reason in its place does not match
    other = result("snp", Status.SKIPPED, "needs vm_type:sev-snp; VM types: default [x]")
    changed = judge([other], baseline)
    assert not changed.passed
    assert changed.violations[0].why.startswith(f"skip reason changed: {path}:")


def test_engine_and_globs(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(
        "expected_skips:\n"
        "  - {scenario: 'qm*', engine: kvm}\n"
        "  - {scenario: snp, reason: 'needs vm_type:sev-snp*'}\n"
    )
    baseline = ExpectedSkips.load(path)
    assert judge([SKIP_SNP, SKIP_QMP], baseline).passed
    on_qemu = result("qmp", Status.SKIPPED, "x", engine="qemu")
    assert not judge([on_qemu], baseline).passed  # the entry is for the kvm engine only


def test_tcg_fallback_and_failures_break_the_gate() -> None:
    tcg = result("smoke", Status.PASSED, accel="tcg", accel_note="auto fell back to TCG: x")
    gate = judge([tcg, result("bad", Status.FAILED, "wrong")], ExpectedSkips(), kvm_unusable="x")
    assert (
        gate.verdict
        == "strict: failed — KVM is unusable here: x (1 did not pass, 1 ran on TCG instead of KVM)"
    )


def test_unused_entries_are_those_of_scenarios_that_ran(tmp_path: Path) -> None:
    path = tmp_path / "b.yaml"
    path.write_text("expected_skips:\n  - scenario: smoke\n  - scenario: not-in-this-run\n")
    gate = judge([PASS], ExpectedSkips.load(path))
    assert gate.passed and gate.unused_expected_skips == ["smoke [*] (line 2)"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n", "b.yaml:1:1: an expected-skips file is a mapping"),
        ("schema_version: 2\n", "b.yaml:1:17: schema_version: expected 1, got 2"),
        ("expected_skip: []\n", "b.yaml:1:1: expected_skip: unknown key"),
        ("expected_skips: {a: 1}\n", "b.yaml:1:17: expected_skips: expected a list"),
        (
            "expected_skips:\n  - engine: kvm\n",
            "b.yaml:2:5: expected_skips[0]: missing required key 'scenario'",
        ),
        (
            "expected_skips:\n  - {scenario: 3}\n",
            "b.yaml:2:16: expected_skips[0].scenario: expected a non-empty string, got 3",
        ),
        (
            "expected_skips:\n  - {scenario: a, reasn: x}\n",
            "b.yaml:2:19: expected_skips[0].reasn: unknown key",
        ),
        ("expected_skips: [\n", "b.yaml:2:1: invalid YAML"),
    ],
)
def test_bad_files_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "b.yaml"
    path.write_text(text)
    with pytest.raises(ExpectedSkipsError) as err:
        ExpectedSkips.load(path)
    assert str(err.value).startswith(f"{tmp_path}/{message}")


def test_a_pass_with_a_warning_breaks_the_gate() -> None:
    """A run that checked nothing passes, but not under --strict."""
    unchecked = result(
        "unpredictable", Status.PASSED, warnings=["nothing was checked: the memory model ..."]
    )
    gate = judge([PASS, unchecked], ExpectedSkips())
    assert not gate.passed
    assert gate.verdict == "strict: failed — 1 passed with a warning"
    (violation,) = gate.violations
    assert violation.scenario == "unpredictable" and violation.status is Status.PASSED
    assert violation.why == "passed with a warning: nothing was checked: the memory model ..."
    # counted apart from TCG fallbacks, which still lead with the cause
    tcg = result("smoke", Status.PASSED, accel="tcg", accel_note="auto fell back to TCG: x")
    both = judge([tcg, unchecked], ExpectedSkips(), kvm_unusable="x")
    assert both.verdict == (
        "strict: failed — KVM is unusable here: x "
        "(1 ran on TCG instead of KVM, 1 passed with a warning)"
    )


def test_a_flaky_result_fails_the_gate_and_is_counted_apart() -> None:
    """A flake is named as one (not as a failure, nor as a TCG run) and listed with why."""
    flaky = result("smoke", Status.FLAKY, "passed 3, failed 2 of 5 runs; run 2 failed: x")
    gate = judge([flaky, PASS, SKIP_SNP], ExpectedSkips())
    assert not gate.passed
    assert gate.verdict == (
        "strict: failed — 1 flaky (their runs ended differently), "
        "1 unexpected skip (no --expect-skips file)"
    )
    assert [(v.scenario, v.status) for v in gate.violations] == [
        ("smoke", Status.FLAKY),
        ("snp", Status.SKIPPED),
    ]
    assert gate.violations[0].why.startswith("flaky: passed 3, failed 2 of 5 runs")
    # the same result stable: nothing to say about it
    assert judge([PASS], ExpectedSkips()).passed
