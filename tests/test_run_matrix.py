"""``qmpgmem run --matrix`` and ``--repeat N`` for real: QEMU 10.0.2 and QEMU 11.x side by
side, and a scenario whose runs end differently because its host file outlives each run.

Why a real flake and no fake: a ``file`` region with ``existing: use`` is a host file the
guest writes through (``share: true``); the scenario expects it zero and then writes it, so
its first run passes and every later one finds the first run's data. That is the state a
real flaky test leaks between runs, created from outside by the test's own file.
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import qmpgmem_cli

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "kvm_available")]

ROOT = Path(__file__).resolve().parents[1]
SID = "build/qemu-sid/qemu-system-x86_64"
#: cheap scenarios (no PVH boot) and the one that needs QEMU >= 11
MATRIX = [
    "scenarios/basic/smoke.yaml",
    "scenarios/lifecycle/reset-keeps-ram.yaml",
    "scenarios/lifecycle/reset-twice.yaml",
    "scenarios/lifecycle/reset-rebuilds-vmfd.yaml",
]
VMFD = "lifecycle-reset-rebuilds-vmfd"


def extra_qemu() -> str:
    """QEMU 11.x: QMPGMEM_EXTRA_QEMU's first binary (make test sets it), else the checkout's
    build/qemu-sid, given relative as a user types it."""
    extra = [p for p in os.environ.get("QMPGMEM_EXTRA_QEMU", "").split(os.pathsep) if p]
    if extra:
        return extra[0]
    if not os.access(ROOT / SID, os.X_OK):
        pytest.skip(
            f"needs QEMU 11.x: {SID} is absent and QMPGMEM_EXTRA_QEMU is unset "
            "(make setup fetches it from Debian sid)"
        )
    return SID


def qmpgmem_run(*args: str) -> subprocess.CompletedProcess[str]:
    return qmpgmem_cli("run", *args, cwd=ROOT, env={"PYTHONPATH": str(ROOT)}, timeout=600)


def by_id(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["results"]}


@pytest.mark.usefixtures("no_leftovers")
def test_matrix_runs_each_scenario_on_each_binary_that_meets_its_requirements(
    tmp_path: Path, junit_xsd: Any
) -> None:
    sid = extra_qemu()
    out = tmp_path / "m.json"
    xml = tmp_path / "m.xml"
    args = [*MATRIX, "--qemu", "qemu-system-x86_64", "--qemu", sid, "--engine", "qemu"]
    args += ["--engine", "kvm", "--artifacts", str(tmp_path / "arts")]
    res = qmpgmem_run(*args, "--matrix", "--json", str(out), "--junit", str(xml))
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(out.read_text())
    binaries = [(q["path"], q["version"]) for q in doc["host"]["qemu"]]
    assert len(binaries) == 2 and binaries[0][1] == "10.0.2", binaries
    assert binaries[1][1].startswith("11."), binaries
    names = ["basic-smoke", "lifecycle-reset-keeps-ram", "lifecycle-reset-twice", VMFD]
    qemu = [r for r in doc["results"] if r["engine"] == "qemu"]
    assert len(qemu) == 2 * len(names)  # every scenario on both binaries
    for name in names:
        mine = [r for r in qemu if r["scenario"] == name]
        assert [(r["qemu"], r["qemu_version"]) for r in mine] == binaries, name
        assert len({r["id"] for r in mine}) == 2 and all("QEMU " in r["id"] for r in mine)
        if name != VMFD:
            assert [r["status"] for r in mine] == ["passed", "passed"], mine
    old, new = (r for r in qemu if r["scenario"] == VMFD)
    assert new["status"] == "passed", new["reason"]
    assert old["status"] == "skipped"
    assert "needs qemu>=11.0" in old["reason"] and "QEMU 10.0.2" in old["reason"]
    assert old["id"] == f"{VMFD} [qemu, QEMU 10.0.2 qemu-system-x86_64]"
    # the kvm engine has no binary axis: one result per scenario
    kvm = [r for r in doc["results"] if r["engine"] == "kvm"]
    assert [(r["id"], r["qemu"]) for r in kvm] == [(f"{n} [kvm]", None) for n in names]
    # the line names binary and version, the skip says why
    assert (
        f"SKIPPED {VMFD} [qemu/kvm] QEMU 10.0.2 qemu-system-x86_64 (0.00s) — needs qemu>=11.0"
        in res.stdout
    )
    assert f"PASSED  {VMFD} [qemu/kvm] QEMU {binaries[1][1]} " in res.stdout
    # one JUnit testcase per result, named by its id
    junit_xsd.validate(str(xml))
    cases = [c.get("name") for c in ET.parse(xml).getroot().iter("testcase")]
    assert cases == [r["id"] for r in doc["results"]]


@pytest.mark.usefixtures("no_leftovers")
def test_without_matrix_each_scenario_runs_once_on_the_first_binary_it_can(
    tmp_path: Path,
) -> None:
    """The default stays: the first binary that meets the requirements, named in the line."""
    sid = extra_qemu()
    out = tmp_path / "r.json"
    res = qmpgmem_run(
        MATRIX[0], MATRIX[-1], "--qemu", "qemu-system-x86_64", "--qemu", sid,
        "--artifacts", str(tmp_path / "arts"), "--json", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads(out.read_text())["results"]
    assert [(r["scenario"], r["status"], r["qemu_version"]) for r in results] == [
        ("basic-smoke", "passed", "10.0.2"),
        (VMFD, "passed", results[1]["qemu_version"]),
    ]
    assert results[1]["qemu_version"].startswith("11.")
    assert f"PASSED  {VMFD} [qemu/kvm] QEMU {results[1]['qemu_version']} " in res.stdout


FLAKY = """\
name: leaks-state
description: expects its host file zero, then writes it; the file outlives the run
vm:
  memory:
    - {{id: disk, size: 4M, backend: file, path: {path}, existing: use, share: true}}
steps:
  - action: guest.verify
    range: {{region: disk, offset: 0, size: 64K}}
    expect: zero
  - action: guest.write
    range: {{region: disk, offset: 0, size: 64K}}
    seed: 9
"""


@pytest.mark.usefixtures("no_leftovers")
def test_repeat_reports_a_scenario_whose_runs_differ_as_flaky(
    tmp_path: Path, junit_xsd: Any
) -> None:
    disk = tmp_path / "disk.mem"
    disk.write_bytes(bytes(4 << 20))
    scenario = tmp_path / "leaks-state.yaml"
    scenario.write_text(FLAKY.format(path=disk))
    out, xml = tmp_path / "f.json", tmp_path / "f.xml"
    res = qmpgmem_run(
        str(scenario), "--allow-unsafe", "--repeat", "5", "--strict", "--json", str(out),
        "--junit", str(xml), "--artifacts", str(tmp_path / "arts"),
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(out.read_text())
    (r,) = doc["results"]
    assert r["status"] == "flaky"
    rep = r["repeats"]
    assert rep["runs"] == 5
    assert rep["statuses"] == ["passed", "failed", "failed", "failed", "failed"]
    assert 0 < rep["duration_min_s"] <= rep["duration_median_s"] <= rep["duration_max_s"]
    assert r["duration_s"] == rep["duration_median_s"]
    assert r["reason"].startswith("passed 1, failed 4 of 5 runs; run 2 failed: step 1:")
    assert doc["summary"]["flaky"] == 1 and doc["summary"]["failed"] == 0
    assert "1 flaky (their runs ended differently)" in doc["gate"]["verdict"]
    for i in range(1, 6):
        assert f"run {i}/5)" in res.stdout
    assert "0 passed, 0 failed, 0 errors, 0 timeouts, 1 flaky, 0 skipped" in res.stdout
    assert "times: " in res.stdout and "(min/median/max)" in res.stdout
    junit_xsd.validate(str(xml))
    suite = ET.parse(xml).getroot()
    failure = suite.find("testcase/failure")
    assert failure is not None and failure.get("type") == "flaky"
    assert (failure.get("message") or "").startswith("passed 1, failed 4 of 5 runs")
    assert suite.get("failures") == "2"  # the flaky testcase and the strict gate


@pytest.mark.usefixtures("no_leftovers")
def test_repeat_of_a_stable_scenario_is_passed_with_every_run_recorded(
    tmp_path: Path,
) -> None:
    out = tmp_path / "s.json"
    res = qmpgmem_run(
        MATRIX[0], "--repeat", "3", "--json", str(out), "--artifacts", str(tmp_path / "arts")
    )
    assert res.returncode == 0, res.stdout + res.stderr
    doc = json.loads(out.read_text())
    (r,) = doc["results"]
    assert r["status"] == "passed"
    assert r["repeats"]["runs"] == 3 and r["repeats"]["statuses"] == ["passed"] * 3
    assert doc["summary"]["passed"] == 1
    assert [f"run {i}/3)" in res.stdout for i in (1, 2, 3)] == [True] * 3


def test_a_plan_of_the_matrix_decides_each_binary_once(tmp_path: Path) -> None:
    """--plan boots nothing: per binary the decision a run makes, not once per repeat."""
    sid = extra_qemu()
    out = tmp_path / "p.json"
    res = qmpgmem_run(
        MATRIX[-1], "--qemu", "qemu-system-x86_64", "--qemu", sid, "--matrix", "--repeat", "3",
        "--plan", "--json", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads(out.read_text())["results"]
    assert [(r["status"], r["qemu_version"][:3], r["repeats"]) for r in results] == [
        ("would-skip", "10.", None),
        ("would-run", "11.", None),
    ]
    assert "needs qemu>=11.0" in results[0]["reason"]
