"""Reading reports back for ``compare`` and ``aggregate``: which kind a file is, or why not.

Why one reader: both commands take files from other hosts and other releases, so each must
tell the kind of a file before anything else (``run``, ``probe``, ``kernel-contract``, or a
bench figures file, :mod:`qmpgmem.report.bench`), refuse a ``schema_version`` it does not
know, and say what is wrong in one sentence that names the file and, for a bad field, its
JSON path (``results.json: $.results[3].status: Input should be 'passed', ...``). That error
is a :class:`~qmpgmem.errors.ScenarioError`, so the CLI exits 2 on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ValidationError

from qmpgmem.errors import ScenarioError
from qmpgmem.report.bench import BenchDocument
from qmpgmem.report.envelope import (
    SCHEMA_VERSION,
    ContractDocument,
    ProbeDocument,
    RunDocument,
)

__all__ = ["InputKind", "LoadedReport", "ReportInputError", "json_path", "read_report"]

InputKind = Literal["run", "probe", "kernel-contract", "bench"]
_MODELS: Final[dict[str, type[BaseModel]]] = {
    "run": RunDocument,
    "probe": ProbeDocument,
    "kernel-contract": ContractDocument,
    "bench": BenchDocument,
}


class ReportInputError(ScenarioError):
    """A file given to compare or aggregate is not a report this qmpgmem reads."""

    def __init__(self, path: str, problem: str, where: str = "") -> None:
        self.path = path
        self.problem = problem
        self.where = where
        super().__init__(f"{path}: {where + ': ' if where else ''}{problem}")


@dataclass(frozen=True)
class LoadedReport:
    """One report as read: its file (as given), its kind and the validated document."""

    path: str
    kind: InputKind
    doc: RunDocument | ProbeDocument | ContractDocument | BenchDocument


def json_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's error location as a JSON path: ``("results", 3, "status")`` gives
    ``$.results[3].status``."""
    out = "$"
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def _kind_of(path: str, data: Any) -> InputKind:
    if not isinstance(data, dict):
        raise ReportInputError(path, f"is a JSON {type(data).__name__}, not a qmpgmem report")
    kind = data.get("kind")
    if kind is None and isinstance(data.get("figures"), list):
        return "bench"  # a bench figures file written without the envelope
    if kind is None:
        raise ReportInputError(path, "has no 'kind'; it is not a qmpgmem report", "$")
    if kind not in _MODELS:
        known = ", ".join(_MODELS)
        raise ReportInputError(path, f"kind {kind!r} is not one of {known}", "$.kind")
    version = data.get("schema_version")
    if version is None and kind != "bench":
        raise ReportInputError(path, "has no 'schema_version'", "$")
    if version is not None and version != SCHEMA_VERSION:
        raise ReportInputError(
            path,
            f"schema_version {version!r} is not one this qmpgmem reads "
            f"({SCHEMA_VERSION}); use the qmpgmem release that wrote it",
            "$.schema_version",
        )
    return kind  # type: ignore[no-any-return]


def read_report(path: Path | str) -> LoadedReport:
    """Read and validate one report of any kind.

    :raise ReportInputError: unreadable, not JSON, not a report, unknown kind or schema
        version, or a field that does not validate (the first such field is named)
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportInputError(name, f"cannot be read ({exc})") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportInputError(
            name, f"is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from exc
    kind = _kind_of(name, data)
    try:
        doc = _MODELS[kind].model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        more = exc.error_count() - 1
        tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
        raise ReportInputError(
            name, f"{first['msg']}{tail}", json_path(tuple(first["loc"]))
        ) from exc
    return LoadedReport(name, kind, doc)  # type: ignore[arg-type]
