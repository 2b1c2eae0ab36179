"""The JSON report: ``{"summary", "results", "host"}``, the models of report/result.py dumped.

Why the models themselves: one definition serves the CLI table, JUnit, JSON and the pytest
plugin; docs/running.md shows the shape.
"""

from __future__ import annotations

import os
from pathlib import Path

from qmpgmem.report.result import RunReport


def run_report_json(report: RunReport) -> str:
    return report.model_dump_json(indent=2, exclude={"extra"}) + "\n"


def write_json(report: RunReport, path: Path) -> None:
    """Atomically (a temp file beside it, then rename): readers never see half a report."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(run_report_json(report))
    os.replace(tmp, path)
