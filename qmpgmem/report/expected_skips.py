"""The expected-skips baseline of a host class: which (scenario, engine, reason) may skip.

Why a baseline and not "skips are fine": a host image that loses KVM, a flag or a QEMU feature
still exits 0 when skips are allowed. A platform team records once, per host class, what is
expected to skip (``qmpgmem run --write-expected-skips FILE``), reviews the file, and runs
``--strict --expect-skips FILE`` on every host of that class: a new skip, or a known one whose
reason changed, fails the run.

The file (YAML)::

    schema_version: 1
    host_class: kvm_pvm, kernel 6.18, QEMU 10.0.2     # free text, for readers
    expected_skips:
      - scenario: conversion-back-to-back               # name, or a glob
        engine: qemu                                     # qemu, kvm, or a glob (default *)
        reason: "step 3: guest.convert needs a KVM*"     # glob over the reason (default *)

Globs are :mod:`fnmatch` patterns (``*``, ``?``, ``[...]``); the writer escapes those
characters in the reasons it copies, so a freshly written file matches exactly.
"""

from __future__ import annotations

import fnmatch
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

from qmpgmem.errors import ScenarioError
from qmpgmem.report.envelope import write_text_atomic
from qmpgmem.report.result import ScenarioResult, Status

__all__ = ["ExpectedSkip", "ExpectedSkips", "ExpectedSkipsError", "write_expected_skips"]

SCHEMA_VERSION = 1
_FIELDS = ("scenario", "engine", "reason")
_TOP = ("schema_version", "host_class", "expected_skips")


class ExpectedSkipsError(ScenarioError):
    """The baseline file is invalid; the message is ``FILE:LINE:COL: field: problem``."""


@dataclass(frozen=True)
class ExpectedSkip:
    scenario: str
    engine: str = "*"
    reason: str = "*"
    line: int = 0  # where the entry is in its file, for messages

    def matches(self, result: ScenarioResult) -> bool:
        return (
            fnmatch.fnmatchcase(result.scenario, self.scenario)
            and fnmatch.fnmatchcase(result.engine, self.engine)
            and fnmatch.fnmatchcase(result.reason, self.reason)
        )

    def names(self, result: ScenarioResult) -> bool:
        """The entry is about this scenario and engine, whatever the reason."""
        return fnmatch.fnmatchcase(result.scenario, self.scenario) and fnmatch.fnmatchcase(
            result.engine, self.engine
        )


@dataclass(frozen=True)
class ExpectedSkips:
    """A loaded baseline; an empty one (no file) expects no skip at all."""

    entries: tuple[ExpectedSkip, ...] = ()
    source: str = ""  # the file; "" when none was given (then no skip is expected)
    host_class: str = ""

    def expected(self, result: ScenarioResult) -> ExpectedSkip | None:
        return next((e for e in self.entries if e.matches(result)), None)

    def about(self, result: ScenarioResult) -> ExpectedSkip | None:
        """An entry naming this scenario and engine (its reason may not match)."""
        return next((e for e in self.entries if e.names(result)), None)

    def unused(self, results: Iterable[ScenarioResult]) -> list[ExpectedSkip]:
        """Entries about scenarios of this run that did not skip as expected (they run now,
        or skip for another reason); entries about scenarios not in the run are left out."""
        results = list(results)
        return [
            e
            for e in self.entries
            if any(e.names(r) for r in results)
            and not any(e.matches(r) for r in results if r.status is Status.SKIPPED)
        ]

    def describe(self) -> str:
        return self.source or "no --expect-skips file"

    @classmethod
    def load(cls, path: Path) -> ExpectedSkips:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ExpectedSkipsError(f"{path}: cannot read the expected-skips file: {exc}") from exc
        try:
            doc = YAML(typ="rt").load(text)
        except YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
            problem = getattr(exc, "problem", None) or exc
            raise ExpectedSkipsError(f"{where}: invalid YAML: {problem}") from None
        return cls(*_entries(path, doc))


def _at(path: Path, node: Any, key: str | int | None) -> str:
    line, col = 0, 0
    if isinstance(node, CommentedMap) and key in node:
        line, col = node.lc.value(key)
    elif isinstance(node, CommentedSeq) and isinstance(key, int):
        line, col = node.lc.item(key)
    elif isinstance(node, CommentedMap | CommentedSeq):
        line, col = node.lc.line, node.lc.col
    return f"{path}:{line + 1}:{col + 1}"


def _entries(path: Path, doc: Any) -> tuple[tuple[ExpectedSkip, ...], str, str]:
    if not isinstance(doc, CommentedMap):
        raise ExpectedSkipsError(
            f"{path}:1:1: an expected-skips file is a mapping with {', '.join(_TOP)}"
        )
    for key in doc:
        if key not in _TOP:
            line, col = doc.lc.key(key)
            raise ExpectedSkipsError(
                f"{path}:{line + 1}:{col + 1}: {key}: unknown key; valid keys: {', '.join(_TOP)}"
            )
    version = doc.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ExpectedSkipsError(
            f"{_at(path, doc, 'schema_version')}: schema_version: expected {SCHEMA_VERSION}, "
            f"got {version!r}"
        )
    items = doc.get("expected_skips", [])
    if not isinstance(items, CommentedSeq):
        raise ExpectedSkipsError(
            f"{_at(path, doc, 'expected_skips')}: expected_skips: expected a list of "
            "{scenario, engine, reason}"
        )
    out = []
    for i, item in enumerate(items):
        field = f"expected_skips[{i}]"
        if not isinstance(item, CommentedMap):
            raise ExpectedSkipsError(
                f"{_at(path, items, i)}: {field}: expected a mapping with scenario, engine, reason"
            )
        for key in item:
            if key not in _FIELDS:
                line, col = item.lc.key(key)
                raise ExpectedSkipsError(
                    f"{path}:{line + 1}:{col + 1}: {field}.{key}: unknown key; valid keys: "
                    + ", ".join(_FIELDS)
                )
        if "scenario" not in item:
            raise ExpectedSkipsError(
                f"{_at(path, items, i)}: {field}: missing required key 'scenario'"
            )
        for key in _FIELDS:
            if key in item and not (isinstance(item[key], str) and item[key]):
                raise ExpectedSkipsError(
                    f"{_at(path, item, key)}: {field}.{key}: expected a non-empty string, "
                    f"got {item[key]!r}"
                )
        out.append(
            ExpectedSkip(
                scenario=str(item["scenario"]),
                engine=str(item.get("engine", "*")),
                reason=str(item.get("reason", "*")),
                line=item.lc.line + 1,
            )
        )
    return tuple(out), str(path), str(doc.get("host_class", ""))


def _escape(text: str) -> str:
    """``text`` as an fnmatch pattern that matches exactly ``text``."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def write_expected_skips(
    results: Sequence[ScenarioResult], path: Path, host_class: str, header: str = ""
) -> int:
    """Write the skips of ``results`` as a baseline; returns how many entries it holds."""
    entries = [
        {"scenario": r.scenario, "engine": r.engine, "reason": _escape(r.reason)}
        for r in results
        if r.status is Status.SKIPPED
    ]
    doc = {"schema_version": SCHEMA_VERSION, "host_class": host_class, "expected_skips": entries}
    yaml = YAML()
    yaml.width = 4096  # one reason per line, so a review diff shows what changed
    buf = io.StringIO()
    yaml.dump(doc, buf)
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    write_text_atomic(path, comment + buf.getvalue())
    return len(entries)
