"""The JSON report: ``{"summary", "results", "host"}``, the models of report/result.py dumped.

Why the models themselves: one definition serves the CLI table, JUnit, JSON and the pytest
plugin; docs/running.md shows the shape.
"""

from __future__ import annotations

from pathlib import Path

from qmpgmem.report.result import RunReport


def write_json(report: RunReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(report.model_dump_json(indent=2, exclude={"extra"}) + "\n")
