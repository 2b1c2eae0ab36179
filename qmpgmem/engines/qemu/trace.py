"""QEMU trace events from the ``-D`` log, and the scenario's ``expect_trace`` checks.

Why the log file: Debian's QEMU is built with the ``log`` trace backend; events switched on
over QMP ``trace-event-set-state`` are written to the ``-D`` file, one line each, as
``PID@SECONDS:name key=value ...`` (the prefix is absent without ``-msg timestamp``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^(?:\d+@[\d.]+:)?(?P<name>[a-z0-9_]+) ?(?P<rest>.*)$")
_FIELD = re.compile(r"([A-Za-z_#][\w#]*)=(\S+)")


@dataclass(frozen=True)
class TraceRecord:
    name: str
    fields: dict[str, str]
    text: str


def parse_trace_lines(lines: Iterable[str], names: set[str] | None = None) -> list[TraceRecord]:
    """Records of the named events (all when ``names`` is None), in order."""
    out = []
    for line in lines:
        m = _LINE.match(line.strip())
        if not m or (names is not None and m["name"] not in names):
            continue
        fields = {k.rstrip(":"): v.rstrip(",") for k, v in _FIELD.findall(m["rest"])}
        out.append(TraceRecord(m["name"], fields, line.rstrip("\n")))
    return out


def read_trace(path: Path, names: set[str]) -> list[TraceRecord]:
    try:
        with open(path, errors="replace") as f:
            return parse_trace_lines(f, names)
    except FileNotFoundError:
        return []


def _field_matches(want: str | int, got: str) -> bool:
    if isinstance(want, int):
        try:
            return int(got, 0) == want
        except ValueError:
            return False
    return got == want


def count_matching(records: list[TraceRecord], event: str, fields: dict[str, str | int]) -> int:
    return sum(
        1
        for r in records
        if r.name == event
        and all(k in r.fields and _field_matches(v, r.fields[k]) for k, v in fields.items())
    )
