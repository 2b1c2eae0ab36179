"""The JSON report of a run: the envelope of report/envelope.py around ``summary`` and
``results``, the models of report/result.py dumped.

Why the models themselves: one definition serves the CLI table, JUnit, JSON and the pytest
plugin; docs/running.md shows the shape, ``qmpgmem schema --report run`` its schema.
"""

from __future__ import annotations

from pathlib import Path

from qmpgmem.report.envelope import RunDocument, document_json, write_text_atomic
from qmpgmem.report.result import RunReport

__all__ = ["run_report_json", "write_json"]


def run_report_json(report: RunReport) -> str:
    """The run's JSON document (``kind: "run"``), indented, with a final newline."""
    return document_json(RunDocument.of(report))


def write_json(report: RunReport, path: Path) -> None:
    """Write the run's JSON document to ``path`` atomically (a temporary file in the same
    directory, then ``os.replace``): safe to call again after every result, a reader or a
    kill never sees half a report."""
    write_text_atomic(path, run_report_json(report))
