"""Write a run's reports where the user asked: JSON and/or JUnit XML, files or stdout (``-``).

Why rewritten after every result: a run stopped by SIGTERM, Ctrl-C, a closed pipe, a CI
timeout or even SIGKILL leaves reports that parse and list what finished (``complete: false``);
each rewrite is atomic (temp file + rename), so a reader never sees half a file. ``-`` can only
be written once, at the end (or at the interruption).
"""

from __future__ import annotations

import sys
from pathlib import Path

from qmpgmem.report.result import RunReport

__all__ = ["STDOUT", "ReportFiles", "write_reports"]

STDOUT = Path("-")


class ReportFiles:
    """The JSON and JUnit destinations of one run."""

    def __init__(self, json_path: Path | None, junit_path: Path | None) -> None:
        if json_path == STDOUT and junit_path == STDOUT:
            raise ValueError("--json - and --junit - cannot both write to stdout")
        self.json_path = json_path
        self.junit_path = junit_path

    @property
    def uses_stdout(self) -> bool:
        """True when a report goes to stdout, so the human output must go to stderr."""
        return STDOUT in (self.json_path, self.junit_path)

    def update(self, report: RunReport) -> None:
        """Rewrite the report files (not stdout) with the results so far."""
        self._write(report, to_stdout=False)

    def finish(self, report: RunReport) -> None:
        """The final reports, stdout included."""
        self._write(report, to_stdout=True)

    def _write(self, report: RunReport, to_stdout: bool) -> None:
        from qmpgmem.report.json import run_report_json, write_json
        from qmpgmem.report.junit import junit_xml, write_junit

        destinations = (
            (self.json_path, run_report_json, write_json),
            (self.junit_path, junit_xml, write_junit),
        )
        for path, text, write in destinations:
            if path == STDOUT:
                if to_stdout:
                    sys.stdout.write(text(report))
                    sys.stdout.flush()
            elif path is not None:
                write(report, path)


def write_reports(report: RunReport, json_path: Path | None, junit_path: Path | None) -> None:
    """One call for commands that write their reports once (lab selftests)."""
    ReportFiles(json_path, junit_path).finish(report)
