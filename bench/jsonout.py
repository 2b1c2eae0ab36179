"""Benchmark figures as JSON beside the Markdown table, with the host fingerprint.

Why: a table in docs/performance.md says what one run on one host measured; two JSON files
with the same shape (bench name, when, the host fingerprint of qmpgmem/host/fingerprint.py,
the raw figures and the rows of the table) compare field by field across runs and hosts.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qmpgmem.host.fingerprint import host_fingerprint

SCHEMA = 1


def write_json(
    path: Path | str,
    bench: str,
    figures: dict[str, Any],
    table: Sequence[Sequence[Any]] = (),
    columns: Sequence[str] = ("figure", "value", "beside the baseline"),
    **extra: Any,
) -> None:
    """Write ``{"schema", "bench", "created", "host", "figures", "table", ...}`` to ``path``.

    ``figures``: the raw numbers (seconds, bytes per second, ratios); ``table``: the rows the
    script printed, as ``columns``.
    """
    doc = {
        "schema": SCHEMA,
        "bench": bench,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": host_fingerprint(engine="qemu,kvm").model_dump(mode="json"),
        **extra,
        "figures": figures,
        "table": [dict(zip(columns, row, strict=True)) for row in table],
    }
    Path(path).write_text(json.dumps(doc, indent=2) + "\n")
