"""Reports a CI can trust: they survive SIGTERM and a closed pipe, go to stdout with ``-``,
and the JUnit validates against Jenkins' junit-10.xsd with what a reader needs inside."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import qmpgmem_cli

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "no_leftovers")]

ROOT = Path(__file__).resolve().parents[1]

VM = """
vm:
  machine: microvm
  memory:
    - id: m0
      size: 16M
"""
SCENARIOS = {
    "a-pass": """
name: a-pass
description: write and verify
tags: [smoke]
steps:
  - action: guest.write
    range: {region: m0, size: 64K}
    seed: 1
  - action: guest.verify
    range: {region: m0, size: 64K}
    expect: {pattern: 1}
""",
    "b-fail": """
name: b-fail
description: expects seed 2 where seed 1 was written
steps:
  - action: guest.write
    range: {region: m0, size: 64K}
    seed: 1
  - action: guest.verify
    range: {region: m0, size: 64K}
    expect: {pattern: 2}
""",
    "c-skip": """
name: c-skip
description: needs a VM type this host lacks
requires: ['vm_type:sev-snp']
steps:
  - action: guest.write
    range: {region: m0, size: 4K}
    seed: 1
""",
    "d-timeout": """
name: d-timeout
description: a step whose own timeout is shorter than what it does
steps:
  - action: sleep
    seconds: 10
    timeout: 1s
""",
    "e-error": """
name: e-error
description: a misspelt QMP command
steps:
  - action: qmp
    command: query-memdevv
""",
}
SLOW = """
name: z-slow
description: sleeps long enough to be interrupted
steps:
  - action: sleep
    seconds: 60
"""


def write(tmp_path: Path, names: list[str], extra: dict[str, str] | None = None) -> Path:
    lib = tmp_path / "lib"
    lib.mkdir(exist_ok=True)
    for name in names:
        (lib / f"{name}.yaml").write_text(SCENARIOS[name].lstrip() + VM)
    for name, text in (extra or {}).items():
        (lib / f"{name}.yaml").write_text(text.lstrip() + VM)
    return lib


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return qmpgmem_cli("run", *args, cwd=cwd, env={"PYTHONPATH": str(ROOT)}, timeout=300)


def test_junit_validates_and_carries_what_a_reader_needs(tmp_path: Path, junit_xsd: Any) -> None:
    write(tmp_path, list(SCENARIOS))
    res = run("lib", "--junit", "out/j.xml", "--artifacts", "arts", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    junit_xsd.validate(str(tmp_path / "out/j.xml"))
    suite = ET.parse(tmp_path / "out/j.xml").getroot()
    assert suite.get("hostname") == os.uname().nodename and suite.get("timestamp")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("5", "1", "2")
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["host.kvm_backend"] and props["host.kernel_release"] == os.uname().release
    names = [c.get("name") or "" for c in suite.iter("testcase")]
    cases = {name.split(" [")[0]: c for name, c in zip(names, suite.iter("testcase"), strict=True)}
    # a testcase names its engine, QEMU version and binary: two binaries are two testcases
    assert any(re.fullmatch(r"a-pass \[qemu, QEMU \d+\.\d+\S* \S+\]", n) for n in names), names

    failed = cases["b-fail"]
    assert failed.find("failure") is not None
    out = failed.findtext("system-out") or ""
    assert "--- last 40 lines of guest serial (serial.log) ---" in out and "WRITE" in out
    assert "--- last 40 lines of QMP (qmp.jsonl) ---" in out
    attachments = [line for line in out.splitlines() if line.startswith("[[ATTACHMENT|")]
    assert "[[ATTACHMENT|arts/" in attachments[0]  # relative to the working directory
    assert any(a.endswith("serial.log]]") for a in attachments)
    assert "file: lib/b-fail.yaml" in out

    skipped = cases["c-skip"].find("skipped")
    assert skipped is not None and skipped.text and "vm_type:sev-snp" in skipped.text
    assert skipped.get("message") == skipped.text
    timeout = cases["d-timeout"].find("error")
    assert timeout is not None and timeout.get("type") == "timeout"
    assert (cases["e-error"].find("error") is not None) and "tags: smoke" in (
        cases["a-pass"].findtext("system-out") or ""
    )


def test_the_schema_check_can_fail(tmp_path: Path, junit_xsd: Any) -> None:
    """What made the old JUnit invalid: a ``file`` attribute on testcase, bare properties."""
    write(tmp_path, ["a-pass"])
    assert run("lib", "--junit", "j.xml", cwd=tmp_path).returncode == 0
    tree = ET.parse(tmp_path / "j.xml")
    case = tree.getroot().find("testcase")
    assert case is not None
    junit_xsd.validate(str(tmp_path / "j.xml"))
    case.set("file", "lib/a-pass.yaml")
    tree.write(tmp_path / "bad.xml")
    assert not junit_xsd.is_valid(str(tmp_path / "bad.xml"))


def test_sigterm_mid_run_leaves_reports_of_what_finished(tmp_path: Path, junit_xsd: Any) -> None:
    write(tmp_path, ["a-pass", "c-skip"], {"z-slow": SLOW})
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmpgmem.cli", "run", "lib", "--json", "r.json", "--junit", "j.xml"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    report = tmp_path / "r.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both quick scenarios reported: z-slow is running
        if report.exists() and len(json.loads(report.read_text())["results"]) == 2:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, out + err
    data = json.loads(report.read_text())
    assert data["complete"] is False and data["interrupted"] == "SIGTERM"
    statuses = [(r["scenario"], r["status"]) for r in data["results"]]
    assert statuses == [("a-pass", "passed"), ("c-skip", "skipped"), ("z-slow", "error")]
    assert data["results"][2]["reason"].startswith("interrupted (SIGTERM) after")
    assert data["summary"]["errors"] == 1
    junit_xsd.validate(str(tmp_path / "j.xml"))
    assert "3 result(s)" not in err and "2 result(s) finished" in err


def test_reports_to_stdout_and_a_closed_pipe(tmp_path: Path, junit_xsd: Any) -> None:
    write(tmp_path, ["a-pass", "c-skip"])
    as_json = run("lib", "--json", "-", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)  # nothing but the report on stdout
    assert [r["status"] for r in data["results"]] == ["passed", "skipped"]
    assert "PASSED  a-pass [qemu/" in as_json.stderr  # the human output went to stderr
    assert not (tmp_path / "-").exists()

    as_junit = run("lib", "--junit", "-", "--plan", cwd=tmp_path)
    assert as_junit.returncode == 0
    (tmp_path / "plan.xml").write_text(as_junit.stdout)
    junit_xsd.validate(str(tmp_path / "plan.xml"))
    plan = ET.fromstring(as_junit.stdout)
    assert plan.get("skipped") == "1" and plan.find("testcase/skipped") is not None
    assert run("lib", "--json", "-", "--junit", "-", cwd=tmp_path).returncode == 2

    # `qmpgmem run | head -1`: the reader leaves; the run stops and its report stays valid.
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmpgmem.cli", "run", "lib", "--json", "r.json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()
    proc.wait(timeout=60)
    assert proc.returncode == 141
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["complete"] is False and data["interrupted"] == "stdout closed"


def test_plan_statuses_in_json(tmp_path: Path) -> None:
    write(tmp_path, ["a-pass", "c-skip"])
    res = run("lib", "--plan", "--json", "p.json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    data = json.loads((tmp_path / "p.json").read_text())
    assert [r["status"] for r in data["results"]] == ["would-run", "would-skip"]
    assert data["summary"]["would_run"] == 1 and data["summary"]["passed"] == 0
    assert "vm_type:sev-snp" in data["results"][1]["reason"]


def test_a_pass_that_checked_nothing_says_so(tmp_path: Path, junit_xsd: Any) -> None:
    unchecked = """
name: unchecked
description: a QMP step the model cannot see through, then reads it cannot predict
steps:
  - action: guest.write
    range: {region: m0, size: 4K}
    seed: 1
  - action: qmp
    command: migrate-set-parameters
    arguments: {downtime-limit: 400}
  - action: guest.verify
    range: {region: m0, size: 4K}
"""
    write(tmp_path, [], {"unchecked": unchecked})
    res = run("lib", "--junit", "j.xml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    line = next(i for i, text in enumerate(res.stdout.splitlines()) if "PASSED  unchecked" in text)
    assert res.stdout.splitlines()[line + 1].strip().startswith("warning: nothing was checked")
    junit_xsd.validate(str(tmp_path / "j.xml"))
    out = ET.parse(tmp_path / "j.xml").getroot().findtext("testcase/system-out") or ""
    assert "warning: nothing was checked" in out
    strict = run("lib", "--strict", cwd=tmp_path)
    assert strict.returncode == 1 and "unchecked [qemu]" in strict.stdout
