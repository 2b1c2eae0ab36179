"""The run's JSON report: the envelope around summary and results, written atomically."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from qmpgmem.report import envelope
from qmpgmem.report.envelope import RunDocument, load_report
from qmpgmem.report.json import run_report_json, write_json
from qmpgmem.report.result import HostInfo, RunReport, ScenarioResult, Status, Summary


def _report(n: int) -> RunReport:
    results = [
        ScenarioResult(scenario=f"s{i}", file=f"s{i}.yaml", status=Status.PASSED, reason="x" * 500)
        for i in range(n)
    ]
    return RunReport(
        summary=Summary.of(results),
        results=results,
        host=HostInfo(hostname="h", engine="qemu"),
        extra={"in-process": object()},
    )


def test_document_is_the_envelope_around_the_report() -> None:
    report = _report(2)
    doc = json.loads(run_report_json(report))
    assert doc["schema_version"] == 1 and doc["kind"] == "run"
    assert doc["created"].endswith("Z")
    assert doc["host"] == report.host.model_dump(mode="json")
    assert doc["summary"] == report.summary.model_dump(mode="json")
    assert [r["scenario"] for r in doc["results"]] == ["s0", "s1"]
    assert "extra" not in doc
    back = load_report(run_report_json(report))
    assert isinstance(back, RunDocument) and back.results == report.results


def test_write_leaves_one_file_with_the_usual_mode(tmp_path: Path) -> None:
    path = tmp_path / "out" / "r.json"
    write_json(_report(1), path)
    write_json(_report(3), path)
    assert os.listdir(path.parent) == ["r.json"]
    assert len(json.loads(path.read_text())["results"]) == 3
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_reader_never_sees_half_a_report(tmp_path: Path) -> None:
    """Rewritten after every result, as a run does; a reader polling all the while always
    parses a whole document."""
    path = tmp_path / "r.json"
    write_json(_report(0), path)
    done = threading.Event()

    def writer() -> None:
        for n in range(1, 80):
            write_json(_report(n), path)
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while not done.is_set():
        json.loads(path.read_text())  # raises on a torn file
        reads += 1
    thread.join()
    assert reads > 0
    assert len(json.loads(path.read_text())["results"]) == 79


def test_a_failed_write_keeps_the_old_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "r.json"
    write_json(_report(1), path)
    before = path.read_text()

    def refuse(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(envelope.os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        write_json(_report(2), path)
    assert path.read_text() == before
    assert os.listdir(tmp_path) == ["r.json"]
