"""kernel-contract --junit: JUnit XML valid against junit-10.xsd, one testcase per check, and
the lab's kernel-contract passing --json/--junit through L1's share."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from qmpgmem.cli import cli
from qmpgmem.cli.contract import contract_document
from qmpgmem.cli.lab import contract_job_args
from qmpgmem.engines.kvm.contract import CheckResult, Outcome
from qmpgmem.report.contract_junit import contract_junit_xml

from .helpers import needs_kvm


def _result(name: str, outcome: Outcome, detail: str = "") -> CheckResult:
    return CheckResult(name, outcome, "upstream says so", "api.rst: X", "kvm_x", detail, 0.25)


def _cases(xml: str) -> dict[str, ET.Element]:
    return {c.get("name", ""): c for c in ET.fromstring(xml).iter("testcase")}


def test_every_outcome_maps_to_a_valid_testcase(tmp_path: Path, junit_xsd: Any) -> None:
    results = [
        _result("a.pass", Outcome.PASSED),
        _result("a.fail", Outcome.FAILED, "x failed with EINVAL, not EEXIST"),
        _result("b.dev", Outcome.DEVIATION, "kvm_x: measured reason; observed: EINVAL"),
        _result("b.skip", Outcome.SKIPPED, "no sw-protected VM \x01 here"),
    ]
    doc = contract_document(results)
    xml = contract_junit_xml(doc, {r.name: r.duration_s for r in results})
    path = tmp_path / "c.xml"
    path.write_text(xml)
    junit_xsd.validate(str(path))
    suite = ET.fromstring(xml)
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    assert suite.get("errors") == "0" and suite.get("time") == "1.000"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["counts.deviation"] == "1" and props["host.engine"] == "kvm"
    cases = _cases(xml)
    assert cases["a.pass"].get("classname") == "kernel-contract.a"
    failure = cases["a.fail"].find("failure")
    assert failure is not None and failure.get("message") == "x failed with EINVAL, not EEXIST"
    skipped = cases["b.skip"].find("skipped")
    assert skipped is not None and skipped.text == "no sw-protected VM \ufffd here"
    dev = cases["b.dev"]
    assert dev.find("failure") is None and dev.find("skipped") is None
    out = dev.findtext("system-out") or ""
    assert out.startswith("deviation: kvm_x: measured reason") and "source: api.rst: X" in out


@needs_kvm
def test_the_cli_writes_junit_beside_json(tmp_path: Path, junit_xsd: Any) -> None:
    junit, js = tmp_path / "out" / "c.xml", tmp_path / "c.json"
    result = CliRunner().invoke(
        cli,
        [
            "kernel-contract",
            "create.flags",
            "fallocate.modes",
            "--junit",
            str(junit),
            "--json",
            str(js),
        ],
    )
    assert result.exit_code == 0, result.output
    junit_xsd.validate(str(junit))
    assert list(_cases(junit.read_text())) == ["create.flags", "fallocate.modes"]


def test_the_lab_points_the_outputs_at_the_share() -> None:
    args, wanted = contract_job_args(
        ("create.flags",), {"--json": Path("c.json"), "--junit": Path("r/c.xml")}, "/share/out"
    )
    assert args == [
        "create.flags",
        "--json",
        "/share/out/run.json",
        "--junit",
        "/share/out/junit.xml",
    ]
    assert wanted == {"--json": Path("c.json"), "--junit": Path("r/c.xml")}
    assert contract_job_args((), {"--json": None, "--junit": None}, "/s") == ([], {})
    with pytest.raises(click.UsageError, match="share"):
        contract_job_args((), {"--junit": Path("-")}, "/s")
