"""Write a run's reports where the user asked: JSON and/or JUnit XML (one call for every
command that produces a RunReport: run, lab selftests)."""

from __future__ import annotations

from pathlib import Path

from qmpgmem.report.result import RunReport

__all__ = ["write_reports"]


def write_reports(report: RunReport, json_path: Path | None, junit_path: Path | None) -> None:
    if json_path:
        from qmpgmem.report.json import write_json

        write_json(report, json_path)
    if junit_path:
        from qmpgmem.report.junit import write_junit

        write_junit(report, junit_path)
