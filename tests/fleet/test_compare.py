"""``qmpgmem compare``: real run reports of this host against themselves and against copies
with one thing broken, and the refusals (mismatched kinds, unknown schema, a bad field)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from qmpgmem.report.compare import ChangeKind, Comparison, Thresholds, compare_reports
from qmpgmem.report.inputs import read_report
from tests.fleet.conftest import qmpgmem, qmpgmem_process, result

Edit = Callable[[dict[str, Any]], None]
WriteCopy = Callable[..., Path]


def compared(
    base: Path, new: Path, *extra: str, process: bool = False
) -> tuple[int, dict[str, Any], str]:
    """Exit code, the JSON comparison, and the tables (stderr) of ``compare BASE NEW`` (in a
    child process with ``process``)."""
    run = qmpgmem_process if process else qmpgmem
    res = run("compare", str(base), str(new), "--json", "-", *extra)
    assert res.returncode in (0, 1), res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


def test_a_run_against_itself_reports_no_change(
    run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    path = write_copy(run_report, "run.json")
    code, doc, text = compared(path, path)
    assert code == 0
    assert doc["changes"] == [] and doc["regressions"] == 0
    assert doc["unchanged"] == len(run_report["results"])
    assert "0 regressions, 0 other changes" in text


def test_one_broken_scenario_is_exactly_one_regression(
    run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    def break_smoke(doc: dict[str, Any]) -> None:
        r = result(doc, "basic-smoke")
        r["status"], r["reason"] = "failed", "step 2 (guest.verify): hash mismatch"

    base = write_copy(run_report, "base.json")
    new = write_copy(run_report, "new.json", break_smoke)
    code, doc, text = compared(base, new, process=True)
    assert code == 1
    assert doc["regressions"] == 1 and len(doc["changes"]) == 1
    (change,) = doc["changes"]
    assert change["kind"] == "new-failure" and change["regression"]
    assert change["subject"].startswith("basic-smoke [qemu, qemu[0]")
    assert (change["base"], change["new"]) == ("passed", "failed")
    assert "hash mismatch" in change["detail"]
    assert "new-failure" in text and "1 regression," in text
    # the other way round it is a fix, and nothing fails
    code, doc, _ = compared(new, base)
    assert code == 0 and [c["kind"] for c in doc["changes"]] == ["fixed"]


def _compare_copies(
    run_report: dict[str, Any], write_copy: WriteCopy, edit_base: Edit | None, edit_new: Edit | None
) -> Comparison:
    """Two copies of the run's report, each edited (None: as it is), compared base -> new."""
    base = read_report(write_copy(run_report, "base.json", edit_base))
    new = read_report(write_copy(run_report, "new.json", edit_new))
    return compare_reports(base, new)


def _skip(doc: dict[str, Any], reason: str = "needs vm_type:sev-snp; host has default") -> None:
    r = result(doc, "basic-smoke")
    r["status"], r["reason"] = "skipped", reason


@pytest.mark.parametrize(
    ("edit_base", "edit_new", "kind", "regression"),
    [
        (None, _skip, ChangeKind.NEW_SKIP, True),
        (_skip, None, ChangeKind.VANISHED_SKIP, False),
        (_skip, lambda d: _skip(d, "needs qemu>=11.0; QEMU 10.0.2"), ChangeKind.SKIP_REASON, False),
        (None, lambda d: d["results"].remove(result(d, "basic-smoke")), ChangeKind.MISSING, True),
        (lambda d: d["results"].remove(result(d, "basic-smoke")), None, ChangeKind.ADDED, False),
        (
            lambda d: result(d, "basic-smoke").update(status="failed"),
            lambda d: result(d, "basic-smoke").update(status="error"),
            ChangeKind.STATUS,
            False,
        ),
        (None, lambda d: result(d, "basic-smoke").update(status="timeout"), ChangeKind.NEW_FAILURE,
         True),
    ],
    ids=["new-skip", "vanished-skip", "skip-reason", "missing", "added", "status", "timeout"],
)
def test_status_changes_are_classified(
    run_report: dict[str, Any],
    write_copy: WriteCopy,
    edit_base: Edit | None,
    edit_new: Edit | None,
    kind: ChangeKind,
    regression: bool,
) -> None:
    cmp = _compare_copies(run_report, write_copy, edit_base, edit_new)
    assert [(c.kind, c.regression) for c in cmp.changes] == [(kind, regression)]
    assert cmp.changes[0].subject.startswith("basic-smoke [qemu")
    assert cmp.ok is not regression


def test_durations_regress_only_beyond_both_thresholds(
    run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    base_s = result(run_report, "basic-smoke")["duration_s"]

    def slower(by: float) -> Edit:
        return lambda d: result(d, "basic-smoke").update(duration_s=base_s * by + 0.0)

    base = read_report(write_copy(run_report, "base.json"))
    for factor, seconds, expected in [
        (1.3, 0.0, []),  # within the ratio
        (3.0, 100.0, []),  # beyond the ratio, not by 100 s
        (3.0, 0.0, [(ChangeKind.SLOWER, True)]),
        (1 / 3.0, 0.0, [(ChangeKind.FASTER, False)]),
    ]:
        new = read_report(write_copy(run_report, "new.json", slower(factor)))
        cmp = compare_reports(base, new, Thresholds(ratio=1.5, seconds=seconds))
        assert [(c.kind, c.regression) for c in cmp.changes] == expected, factor


def test_several_runs_of_one_key_count_as_their_worst(
    run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    """A report with one result repeated (``--repeat``): one failure among them regresses."""

    def repeat(doc: dict[str, Any]) -> None:
        again = dict(result(doc, "basic-smoke"), status="failed", reason="flaked")
        doc["results"].append(again)

    cmp = compare_reports(
        read_report(write_copy(run_report, "base.json")),
        read_report(write_copy(run_report, "new.json", repeat)),
    )
    assert [(c.kind, c.new) for c in cmp.changes] == [(ChangeKind.NEW_FAILURE, "failed")]


def test_an_interrupted_run_and_a_failed_gate_regress(
    run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    def interrupted(doc: dict[str, Any]) -> None:
        doc["complete"], doc["interrupted"] = False, "SIGTERM"
        doc["gate"] = {"passed": False, "verdict": "strict: failed — 1 unexpected skip",
                       "baseline": "classes/x.yaml"}

    code, doc, _ = compared(
        write_copy(run_report, "base.json"), write_copy(run_report, "new.json", interrupted)
    )
    assert code == 1
    kinds = {c["kind"]: c for c in doc["changes"]}
    assert set(kinds) == {"incomplete", "gate"}
    assert "SIGTERM" in kinds["incomplete"]["detail"]
    assert kinds["gate"]["detail"] == "strict: failed — 1 unexpected skip"


def test_host_fingerprint_differences_are_listed_not_failed(
    run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    def upgraded(doc: dict[str, Any]) -> None:
        doc["host"]["kernel_release"] = "7.0.0-candidate"
        doc["host"]["qemu"][0]["package_version"] = "1:11.0.0+ds-1"

    code, doc, text = compared(
        write_copy(run_report, "base.json"), write_copy(run_report, "new.json", upgraded)
    )
    assert code == 0
    fields = {c["subject"]: (c["base"], c["new"]) for c in doc["changes"]}
    assert set(fields) == {"kernel_release", "qemu[0].package_version"}
    assert fields["kernel_release"] == (run_report["host"]["kernel_release"], "7.0.0-candidate")
    assert doc["base"]["host"] != doc["new"]["host"]  # another host id: another image
    assert "host fingerprint" in text and "2 host fields differ" in text


def test_kernel_contract_reports_compare_by_check(
    contract_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    base = write_copy(contract_report, "base.json")
    code, doc, _ = compared(base, base)
    assert code == 0 and doc["changes"] == [] and doc["compared"] == "kernel-contract"
    name = next(c["name"] for c in contract_report["checks"] if c["outcome"] == "passed")

    def broken(d: dict[str, Any]) -> None:
        check = next(c for c in d["checks"] if c["name"] == name)
        check["outcome"], check["detail"] = "failed", "KVM_CREATE_GUEST_MEMFD returned 0"

    code, doc, _ = compared(base, write_copy(contract_report, "new.json", broken))
    assert code == 1
    assert [(c["kind"], c["subject"], c["base"], c["new"]) for c in doc["changes"]] == [
        ("new-failure", name, "passed", "failed")
    ]


def test_probe_reports_show_what_the_host_lost(
    probe_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    base = write_copy(probe_report, "base.json")
    code, doc, _ = compared(base, base)
    assert code == 0 and doc["changes"] == []

    def degraded(d: dict[str, Any]) -> None:
        facts = {f["name"]: f for f in d["facts"]}
        facts["kvm"]["value"] = False
        facts["qemu.version"]["value"] = "99.0.0"
        d["qemu"][0]["qmp_commands"].remove("query-memdev")

    code, doc, _ = compared(base, write_copy(probe_report, "new.json", degraded))
    assert code == 1
    by = {c["subject"]: c for c in doc["changes"]}
    assert by["kvm"]["kind"] == "lost" and by["kvm"]["regression"]
    lost = by["qemu[0].qmp_commands"]
    assert lost["kind"] == "lost" and lost["detail"] == "lost query-memdev"
    assert by["qemu.version"]["kind"] == "changed" and not by["qemu.version"]["regression"]
    assert doc["regressions"] == 2


BENCH = {
    "kind": "bench",
    "schema_version": 1,
    "figures": [
        {"name": "boot_rom_kvm", "value": 0.040, "unit": "s",
         "baseline": {"name": "boot_rom_tcg", "value": 0.031}},
        {"name": "guest_hash_gib_s", "value": 10.9, "unit": "GiB/s", "better": "higher"},
    ],
}  # fmt: skip


def test_bench_figures_compare_in_the_shape_report_bench_defines(tmp_path: Path) -> None:
    """No bench JSON writer on this branch yet: the file is written here, in the documented
    shape (qmpgmem/report/bench.py)."""
    base = tmp_path / "base.json"
    base.write_text(json.dumps(BENCH))
    code, doc, _ = compared(base, base)
    assert code == 0 and doc["compared"] == "bench" and doc["unchanged"] == 2

    worse = json.loads(json.dumps(BENCH))
    worse["figures"][1]["value"] = 4.0  # hashing 2.7x slower: a regression (higher is better)
    worse["figures"][0]["value"] = 0.080  # boot 2x slower, but so is its baseline: judged
    worse["figures"][0]["baseline"]["value"] = 0.062  # relative to it, nothing changed
    del worse["kind"], worse["schema_version"]  # a bare figures file is read too
    new = tmp_path / "new.json"
    new.write_text(json.dumps(worse))
    code, doc, _ = compared(base, new, "--seconds", "0")
    assert code == 1
    assert [(c["kind"], c["subject"]) for c in doc["changes"]] == [("slower", "guest_hash_gib_s")]
    assert "2.73x worse" in doc["changes"][0]["detail"]


def test_mismatched_kinds_are_refused_naming_the_files(
    run_report: dict[str, Any], contract_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    run = write_copy(run_report, "run.json")
    contract = write_copy(contract_report, "contract.json")
    res = qmpgmem_process("compare", str(run), str(contract))
    assert res.returncode == 2 and res.stdout == ""
    message = res.stderr.strip()
    assert len(message.splitlines()) == 1
    assert str(contract) in message and str(run) in message and "kernel-contract" in message


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: d.update(schema_version=2), "$.schema_version: schema_version 2 is not one"),
        (lambda d: d.update(kind="review"), "$.kind: kind 'review' is not one of"),
        (lambda d: d.pop("kind"), "$: has no 'kind'"),
        (lambda d: d["results"][1].update(status="fine"), "$.results[1].status: Input should be"),
        (lambda d: d["host"].update(qemu="x"), "$.host.qemu: Input should be a valid list"),
    ],
    ids=["schema-version", "kind", "no-kind", "bad-status", "bad-host"],
)
def test_bad_input_names_the_file_and_the_field(
    run_report: dict[str, Any], write_copy: WriteCopy, edit: Edit, expected: str
) -> None:
    good = write_copy(run_report, "good.json")
    bad = write_copy(run_report, "bad.json", edit)
    res = qmpgmem("compare", str(good), str(bad))
    assert res.returncode == 2
    assert res.stderr.strip().startswith(f"error: {bad}: {expected}"), res.stderr
    assert "Traceback" not in res.stderr


def test_a_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text("<testsuite/>")
    res = qmpgmem("compare", str(path), str(path))
    assert res.returncode == 2
    assert res.stderr.strip() == f"error: {path}: is not JSON (Expecting value at line 1 column 1)"
    missing = tmp_path / "missing.json"
    res = qmpgmem("compare", str(missing), str(missing))
    assert res.returncode == 2 and f"error: {missing}: cannot be read" in res.stderr


def test_help_teaches_with_an_example() -> None:
    res = qmpgmem("compare", "--help")
    assert res.returncode == 0
    assert "qmpgmem compare last-good/run.json candidate/run.json" in res.stdout


def test_a_result_that_moved_to_another_binary_is_still_one_result(
    run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    """The candidate run adds a second --qemu, on which a scenario that skipped now runs."""

    def second_binary(doc: dict[str, Any]) -> None:
        sid = dict(doc["host"]["qemu"][0], path="build/qemu-sid/qemu-system-x86_64",
                   version="11.1.3", package=None, package_version=None)  # fmt: skip
        doc["host"]["qemu"].append(sid)
        result(doc, "basic-smoke")["qemu"] = sid["path"]

    base = read_report(write_copy(run_report, "base.json", _skip))
    new = read_report(write_copy(run_report, "new.json", second_binary))
    cmp = compare_reports(base, new)
    runs = [c for c in cmp.changes if c.kind is not ChangeKind.HOST]
    assert [(c.kind, c.subject) for c in runs] == [
        (ChangeKind.VANISHED_SKIP, "basic-smoke [qemu, qemu[1] 11.1.3]")
    ]
    assert cmp.ok


def _flaky(doc: dict[str, Any]) -> None:
    """basic-smoke as ``run --repeat 5`` reports a scenario whose runs differ."""
    r = result(doc, "basic-smoke")
    statuses = ["passed", "failed", "passed", "passed", "passed"]
    r["status"], r["reason"] = "flaky", "passed 4, failed 1 of 5 runs; run 2 failed: step 2: x"
    r["repeats"] = {"runs": 5, "statuses": statuses, "duration_min_s": 0.1,
                    "duration_median_s": 0.2, "duration_max_s": 0.9}  # fmt: skip


def _failed(doc: dict[str, Any]) -> None:
    result(doc, "basic-smoke").update(status="failed", reason="step 2: hash mismatch")


@pytest.mark.parametrize(
    ("edit_base", "edit_new", "kind", "regression"),
    [
        (None, _flaky, ChangeKind.FLAKY, True),
        (_flaky, None, ChangeKind.FIXED, False),
        (_failed, _flaky, ChangeKind.STATUS, False),
        (_flaky, _failed, ChangeKind.NEW_FAILURE, True),
    ],
    ids=["passed-to-flaky", "flaky-to-passed", "failed-to-flaky", "flaky-to-failed"],
)
def test_a_flaky_result_is_a_regression_where_it_passed_before(
    run_report: dict[str, Any],
    write_copy: WriteCopy,
    edit_base: Edit | None,
    edit_new: Edit | None,
    kind: ChangeKind,
    regression: bool,
) -> None:
    cmp = _compare_copies(run_report, write_copy, edit_base, edit_new)
    assert [(c.kind, c.regression) for c in cmp.changes] == [(kind, regression)]
    if kind is ChangeKind.FLAKY:
        assert cmp.changes[0].detail.startswith("passed 4, failed 1 of 5 runs")


def _matrix(doc: dict[str, Any]) -> None:
    """The report as ``run --matrix`` with a second binary writes it: every qemu-engine
    result once more, on QEMU 11.1.3, under its own id."""
    sid = dict(doc["host"]["qemu"][0], path="/opt/qemu-11/bin/qemu-system-x86_64",
               version="11.1.3", package=None, package_version=None)  # fmt: skip
    doc["host"]["qemu"].append(sid)
    for r in list(doc["results"]):
        if r["engine"] == "qemu":
            rid = f"{r['scenario']} [qemu, QEMU 11.1.3 {sid['path']}]"
            doc["results"].append(dict(r, qemu=sid["path"], qemu_version="11.1.3", id=rid))


def test_matrix_reports_compare_per_binary(
    run_report: dict[str, Any], write_copy: WriteCopy
) -> None:
    """A failure that moves from one binary to the other is a fix on one and a new failure
    on the other, not "unchanged" as it would be keyed by scenario and engine alone."""

    def fails_on(slot: int) -> Edit:
        def edit(doc: dict[str, Any]) -> None:
            _matrix(doc)
            path = doc["host"]["qemu"][slot]["path"]
            (r,) = [r for r in doc["results"] if r["scenario"] == "basic-smoke" and
                    r["qemu"] == path]  # fmt: skip
            r["status"], r["reason"] = "failed", "step 2: hash mismatch"

        return edit

    same = write_copy(run_report, "matrix.json", _matrix)
    itself = compare_reports(read_report(same), read_report(same))
    assert itself.changes == [] and itself.unchanged == len(read_report(same).doc.results)
    cmp = compare_reports(
        read_report(write_copy(run_report, "base.json", fails_on(0))),
        read_report(write_copy(run_report, "new.json", fails_on(1))),
    )
    version = run_report["host"]["qemu"][0]["version"]
    assert sorted((c.kind, c.subject) for c in cmp.changes) == [
        (ChangeKind.FIXED, f"basic-smoke [qemu, qemu[0] {version}]"),
        (ChangeKind.NEW_FAILURE, "basic-smoke [qemu, qemu[1] 11.1.3]"),
    ]
    assert cmp.regressions == 1
