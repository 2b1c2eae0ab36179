"""Problems in scenario files as FILE:LINE:COL: field: message, whatever found them.

Why a module of its own: the parser (:mod:`.source`) and pydantic find problems in different
terms (a position in the text; a ``loc`` in the model). Both end here as one
:class:`ScenarioIssue`. A pydantic ``loc`` is walked through the parsed value and its
positions; the tag pydantic adds for a discriminated union ("guest.write") is not a key in the
file and is dropped on the way. Messages are chosen by the error's ``type`` and ``ctx``, never
by matching pydantic's English text.
"""

from __future__ import annotations

import difflib
import functools
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from qmpgmem.errors import ScenarioError
from qmpgmem.scenario.model import EXPECT_TAGS, STEP_ACTIONS, PatternExpect, Scenario
from qmpgmem.scenario.source import Node, Position, SourceError

__all__ = [
    "InvalidScenarioError",
    "ScenarioIssue",
    "dedupe",
    "file_issue",
    "format_path",
    "issue_from_error",
    "issue_from_source",
    "kind_of",
    "locate",
]

#: loc elements pydantic adds for union members; they are not keys of the file.
_TAGS: Final = frozenset(STEP_ACTIONS) | frozenset(EXPECT_TAGS)


@dataclass(frozen=True)
class ScenarioIssue:
    """One problem in one file, located as precisely as the file allows."""

    file: Path
    line: int | None  # 1-based; None when the problem is the file itself (missing, unreadable)
    column: int | None  # 1-based
    field: str  # "steps[2].range.size"; "" for the whole file
    message: str
    type: str = "invalid"  # pydantic's or our error type, for tools and tests

    def __str__(self) -> str:
        where = str(self.file)
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        prefix = f"{self.field}: " if self.field else ""
        return f"{where}: {prefix}{self.message}"


class InvalidScenarioError(ScenarioError):
    """A scenario file is invalid; ``issues`` says where and why, one entry per problem."""

    def __init__(self, path: Path, issues: Sequence[ScenarioIssue]) -> None:
        self.path = path
        self.issues = list(issues)
        count = len(self.issues)
        super().__init__(f"{path}: {count} problem{'s' if count != 1 else ''}")

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues) or super().__str__()


# -- errors -> issues --------------------------------------------------------------------------


def file_issue(path: Path, message: str) -> ScenarioIssue:
    """A problem with the file itself (missing, unreadable): no line."""
    return ScenarioIssue(path, None, None, "", message, "file")


def issue_from_source(path: Path, error: SourceError) -> ScenarioIssue:
    """A problem the parser found at a position of the text."""
    return ScenarioIssue(
        path, error.line, error.column, format_path(error.path), error.message, error.kind
    )


def dedupe(issues: list[ScenarioIssue]) -> list[ScenarioIssue]:
    """``issues`` without repeats (pydantic may report one problem through two union arms)."""
    seen: set[tuple[Any, ...]] = set()
    out = []
    for issue in issues:
        key = (issue.line, issue.column, issue.field, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def issue_from_error(
    path: Path, value: Any, root: Node | Position | None, error: Any
) -> ScenarioIssue:
    """One pydantic error (an item of ``ValidationError.errors()``) at its place in the file."""
    loc: tuple[str | int, ...] = tuple(error["loc"])
    line, column, parts, schema_loc = locate(value, root, loc, error["type"])
    message = _message(error, schema_loc, parts)
    return ScenarioIssue(path, line, column, format_path(parts), message, error["type"])


def _start(pos: Node | Position) -> Position:
    return pos.position if isinstance(pos, Node) else pos


def locate(
    value: Any, root: Node | Position | None, loc: tuple[str | int, ...], kind: str
) -> tuple[int, int, list[str | int], tuple[str | int, ...]]:
    """Walk ``loc`` through the parsed value and its positions.

    Returns (line, column, the path shown, loc without union tags). The position is the
    value's, or the key's when the value is a list or a mapping (or the key is unknown); a
    missing key, or a value that is not the container pydantic expected, gets its parent's.
    """
    node: Any = value
    pos: Node | Position | None = root
    line, column = 1, 1
    parts: list[str | int] = []
    schema_loc: list[str | int] = []
    for position, elem in enumerate(loc):
        last = position == len(loc) - 1
        if (
            isinstance(elem, str)
            and elem in _TAGS
            and not (isinstance(node, dict) and elem in node)
        ):
            schema_loc.append(elem)
            continue  # a union tag, not a key of the file
        parts.append(elem)
        schema_loc.append(elem)
        if isinstance(node, dict) and elem in node:
            child = node[elem]
            child_pos = None
            if isinstance(pos, Node) and pos.keys is not None and elem in pos.keys:
                assert isinstance(pos.children, dict)
                child_pos = pos.children[elem]
                point_at_key = kind == "extra_forbidden" or isinstance(child, dict | list)
                line, column = pos.keys[elem] if point_at_key else _start(child_pos)
            node, pos = child, child_pos
        elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
            child_pos = None
            if isinstance(pos, Node) and isinstance(pos.children, list):
                child_pos = pos.children[elem]
                line, column = _start(child_pos)
            node, pos = node[elem], child_pos
        else:
            if not last:
                parts.extend(
                    e for e in loc[position + 1 :] if not (isinstance(e, str) and e in _TAGS)
                )
            break
    return line, column, parts, tuple(schema_loc)


def format_path(parts: Sequence[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_FRIENDLY: Final[dict[str, str]] = {
    "int_type": "expected an integer",
    "int_parsing": "expected an integer",
    "int_from_float": "expected an integer",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "string_type": "expected a string",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "list_type": "expected a list",
    "dict_type": "expected a mapping (key: value)",
    "model_type": "expected a mapping (key: value)",
    "model_attributes_type": "expected a mapping (key: value)",
}


def _message(error: Any, loc: tuple[str | int, ...], parts: Sequence[str | int]) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    value = error.get("input")
    if kind.startswith("qmpgmem_"):
        return str(ctx.get("message", error["msg"]))
    if kind == "extra_forbidden":
        key = str(loc[-1])
        keys = _keys_at(tuple(0 if isinstance(e, int) else e for e in loc[:-1]))
        return f"unknown key {key!r}" + _suggest(key, keys, "valid keys")
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing required value"
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        return f"unknown action {tag!r}" + _suggest(tag, tuple(STEP_ACTIONS), "valid actions")
    if kind == "union_tag_not_found":
        discriminator = str(ctx.get("discriminator", "action")).strip("'")
        return f"missing key {discriminator!r}; valid actions: " + ", ".join(STEP_ACTIONS)
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {_describe(value)}"
    if kind == "too_short":
        count = ctx.get("min_length", 1)
        return f"expected at least {count} item{'s' if count != 1 else ''}, got {len(value or ())}"
    if kind == "string_too_short":
        return "expected a non-empty string"
    comparisons = {
        "greater_than_equal": ("ge", ">="),
        "greater_than": ("gt", ">"),
        "less_than_equal": ("le", "<="),
        "less_than": ("lt", "<"),
    }
    if kind in comparisons:
        key, op = comparisons[kind]
        return f"expected a value {op} {ctx.get(key)}, got {_describe(value)}"
    if kind in _FRIENDLY:
        return f"{_FRIENDLY[kind]}, got {_describe(value)}"
    return f"{error['msg']} (got {_describe(value)})"


#: Longest quote of a value in a message (a description may be megabytes).
_QUOTE_LIMIT: Final = 60


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= _QUOTE_LIMIT else text[: _QUOTE_LIMIT - 5] + "...'"


def kind_of(value: Any) -> str:
    """What ``value`` is, for a message: "a list", "str 'abc'"."""
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {_describe(value)}"


# Cached, as are the keys at a loc: a file may repeat one mistake in each of 60,000 steps.
@functools.lru_cache(maxsize=256)
def _suggest(word: str, choices: tuple[str, ...] | None, label: str) -> str:
    if not choices:
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; {label}: " + ", ".join(choices)


# -- which keys does the model allow at a loc? -------------------------------------------------


@functools.lru_cache(maxsize=256)
def _keys_at(loc: tuple[str | int, ...]) -> tuple[str, ...] | None:
    """The keys the model accepts at ``loc`` (loc as pydantic gives it, tags included; list
    indices do not matter)."""
    candidates: list[Any] = [Scenario]
    for elem in loc:
        nxt: list[Any] = []
        for tp in _flatten(candidates):
            nxt.extend(_step_into(tp, elem))
        if not nxt:
            return None
        candidates = nxt
    models = list(dict.fromkeys(tp for tp in _flatten(candidates) if _is_model(tp)))
    if len(models) != 1:
        return None
    return tuple(info.alias or name for name, info in models[0].model_fields.items())


def _flatten(types_: list[Any]) -> list[Any]:
    out: list[Any] = []
    for tp in types_:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            out.extend(_flatten([typing.get_args(tp)[0]]))
        elif origin is typing.Union or origin is types.UnionType:
            out.extend(_flatten(list(typing.get_args(tp))))
        else:
            out.append(tp)
    return out


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _step_into(tp: Any, elem: str | int) -> list[Any]:
    origin = typing.get_origin(tp)
    if isinstance(elem, int):
        return [typing.get_args(tp)[0]] if origin is list else []
    if elem in STEP_ACTIONS:
        return [STEP_ACTIONS[elem]]
    if elem == "pattern-seed":
        return [PatternExpect]
    if origin is dict:
        return [typing.get_args(tp)[1]]
    if _is_model(tp):
        for name, info in tp.model_fields.items():
            if elem in (name, info.alias):
                return [info.annotation]
    return []
