"""Load scenario files and turn every problem into FILE:LINE:COL: field: message.

Why ruamel round-trip: it keeps a line and column for every key and list item, so an error
pydantic reports at ``steps.2.guest.write.range.size`` can be printed at the line the user must
edit. The tag pydantic puts into ``loc`` for a discriminated union ("guest.write") is not a key
in the file and is dropped on the way. Messages are chosen by the error's ``type`` and ``ctx``,
never by matching pydantic's English text.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from qmpgmem.errors import ScenarioError
from qmpgmem.scenario.model import (
    EXPECT_TAGS,
    REQUIREMENT_CHECK,
    STEP_ACTIONS,
    PatternExpect,
    Scenario,
)

__all__ = [
    "SCENARIO_SUFFIXES",
    "InvalidScenarioError",
    "LoadedScenario",
    "ScenarioIssue",
    "load_paths",
    "load_scenario",
    "looks_like_scenario",
    "scenario_line",
]

log = logging.getLogger(__name__)

SCENARIO_SUFFIXES: Final = (".yaml", ".yml", ".json")
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


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario together with where it came from, for reports that quote the file."""

    scenario: Scenario
    path: Path
    step_lines: list[int]  # 1-based line where each step starts
    text: str
    #: 1-based last line of each step (comments and blank lines after it excluded).
    step_end_lines: list[int] = field(default_factory=list)

    def step_source(self, index: int, numbered: bool = True) -> str:
        """The lines of step ``index`` as written in the file, numbered like an editor shows."""
        lines = self.text.splitlines()
        first = self.step_lines[index]
        last = self.step_end_lines[index] if self.step_end_lines else first
        width = len(str(last))
        out = []
        for number in range(first, last + 1):
            text = lines[number - 1] if number - 1 < len(lines) else ""
            out.append(f"{number:>{width}} | {text}" if numbered else text)
        return "\n".join(out)


# -- loading -----------------------------------------------------------------------------------


RequirementCheck = Callable[[str], str | None]


def load_scenario(
    path: str | Path, *, requirement_check: RequirementCheck | None = None
) -> LoadedScenario:
    """Read, parse and validate one scenario file.

    ``requirement_check`` (e.g. ``qmpgmem.host.check_requirement_syntax``) also rejects
    requirement names no host can answer; without it only their syntax is checked.

    :raise InvalidScenarioError: (a :class:`~qmpgmem.errors.ScenarioError`) with every issue found.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidScenarioError(path, [_issue(path, "no such file")]) from None
    except IsADirectoryError:
        raise InvalidScenarioError(
            path, [_issue(path, "is a directory; use load_paths for directories")]
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidScenarioError(path, [_issue(path, f"cannot read: {exc}")]) from None
    return _load_text(path, text, requirement_check)


def load_paths(
    paths: Iterable[str | Path], *, requirement_check: RequirementCheck | None = None
) -> tuple[list[LoadedScenario], list[ScenarioIssue]]:
    """Load every scenario file under ``paths`` (directories recurse, sorted); never raises.

    Also reports a scenario name used by more than one file, since reports key on names.
    """
    loaded: list[LoadedScenario] = []
    issues: list[ScenarioIssue] = []
    for path in _expand(paths, issues):
        try:
            loaded.append(load_scenario(path, requirement_check=requirement_check))
        except InvalidScenarioError as exc:
            issues.extend(exc.issues)
    first_by_name: dict[str, LoadedScenario] = {}
    for item in loaded:
        other = first_by_name.setdefault(item.scenario.name, item)
        if other is not item:
            line, column = _name_position(item.text)
            issues.append(
                ScenarioIssue(
                    item.path,
                    line,
                    column,
                    "name",
                    f"scenario name {item.scenario.name!r} is also used by {other.path}",
                    "qmpgmem_duplicate",
                )
            )
    return loaded, issues


def _expand(paths: Iterable[str | Path], issues: list[ScenarioIssue]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix in SCENARIO_SUFFIXES
            )
            if not found:
                issues.append(_issue(path, "directory holds no *.yaml, *.yml or *.json files"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            issues.append(_issue(path, "no such file or directory"))
    return files


#: The keys every scenario must have (name, description, vm, steps), from the model.
_REQUIRED_KEYS: Final = frozenset(
    info.alias or name for name, info in Scenario.model_fields.items() if info.is_required()
)
#: Of those, the ones an unrelated file rarely has at its top level.
_DISTINCT_KEYS: Final = frozenset({"vm", "steps"}) & _REQUIRED_KEYS
#: A scenario is a few KiB; a larger file is data, not a scenario.
_SNIFF_LIMIT: Final = 1 << 20
#: A top-level key of a block mapping: ``name:``, ``"name":``, at column 0.
_TOP_KEY = re.compile(
    r"""^(?:"([^"\n]*)"|'([^'\n]*)'|([A-Za-z_][\w.-]*))[ \t]*:(?=[ \t]|$)""", re.MULTILINE
)
_JSON_KEY = re.compile(r'"([A-Za-z_]\w*)"\s*:')


def looks_like_scenario(path: str | Path) -> bool:
    """Whether ``path`` is meant as a scenario file, without validating it.

    It is when its top level is a mapping with at least two of the keys every scenario must
    have (name, description, vm, steps), one of them vm or steps. A file that does not parse
    is judged by its top-level lines. Never raises; unreadable, non-UTF-8 and files over
    1 MiB are not scenarios.

    Why this loose: a collector (the pytest plugin) must leave a project's unrelated
    ``config.yaml`` alone, yet a scenario that misses a required key or has a syntax error
    must still reach :func:`load_scenario` and fail there with FILE:LINE.
    """
    path = Path(path)
    try:
        if path.stat().st_size > _SNIFF_LIMIT:
            return False
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    keys: set[str]
    try:
        document = _parse(path, text)
    except InvalidScenarioError:  # a syntax error: read the keys off the lines
        pattern = _JSON_KEY if path.suffix == ".json" else _TOP_KEY
        keys = {next(g for g in m.groups() if g is not None) for m in pattern.finditer(text)}
    else:
        if not isinstance(document, dict):
            return False
        keys = {key for key in document if isinstance(key, str)}
    found = keys & _REQUIRED_KEYS
    return len(found) >= 2 and bool(found & _DISTINCT_KEYS)


def scenario_line(text: str) -> int:
    """The 1-based line where a scenario's text names it (its ``name:`` key), else 1."""
    return _name_position(text)[0]


def _load_text(
    path: Path, text: str, requirement_check: RequirementCheck | None = None
) -> LoadedScenario:
    document = _parse(path, text)
    if document is None:
        raise InvalidScenarioError(
            path,
            [
                _issue(
                    path,
                    "the file is empty; a scenario is a mapping with name, description, "
                    "vm and steps",
                )
            ],
        )
    if not isinstance(document, dict):
        raise InvalidScenarioError(
            path,
            [
                ScenarioIssue(
                    path,
                    1,
                    1,
                    "",
                    "a scenario is a mapping with name, description, vm and steps, "
                    f"got {_kind(document)}",
                    "model_type",
                )
            ],
        )
    try:
        context = {REQUIREMENT_CHECK: requirement_check} if requirement_check else None
        scenario = Scenario.model_validate(_plain(document), context=context)
    except ValidationError as exc:
        issues = [_issue_from_error(path, document, error) for error in exc.errors()]
        issues.sort(key=lambda issue: (issue.line or 0, issue.column or 0))
        raise InvalidScenarioError(path, _dedupe(issues)) from None
    step_lines, step_end_lines = _step_lines(document, text)
    log.debug("loaded %s: %d steps", path, len(scenario.steps))
    return LoadedScenario(scenario, path, step_lines, text, step_end_lines)


def _parse(path: Path, text: str) -> Any:
    """YAML (round-trip, with positions); JSON through the same parser when it can."""
    if path.suffix == ".json":
        try:
            data = json.loads(text) if text.strip() else None
        except json.JSONDecodeError as exc:
            raise InvalidScenarioError(
                path,
                [
                    ScenarioIssue(
                        path, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}", "json_syntax"
                    )
                ],
            ) from None
        try:
            return _yaml().load(text)
        except YAMLError:
            log.debug("%s: valid JSON the YAML parser rejects; no line numbers", path)
            return data
    try:
        return _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise InvalidScenarioError(
            path,
            [
                ScenarioIssue(
                    path, line, column, "", f"invalid YAML: {problem or exc}", "yaml_syntax"
                )
            ],
        ) from None
    except YAMLError as exc:
        raise InvalidScenarioError(
            path, [ScenarioIssue(path, 1, 1, "", f"invalid YAML: {exc}", "yaml_syntax")]
        ) from None


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _plain(node: Any) -> Any:
    """ruamel's node types turned into plain Python values (ScalarInt -> int, ...)."""
    if isinstance(node, dict):
        return {str(key) if isinstance(key, str) else key: _plain(v) for key, v in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def _step_lines(document: Any, text: str) -> tuple[list[int], list[int]]:
    steps = document.get("steps")
    if not isinstance(steps, CommentedSeq):
        return [1] * len(steps or []), [1] * len(steps or [])
    positions = [steps.lc.item(i) for i in range(len(steps))]
    starts = [line + 1 for line, _ in positions]
    lines = text.splitlines()
    # A step ends before the next one starts; the last one where a line is indented less
    # than the step's content (the column after "- "), such as the next top-level key.
    ends = []
    for index, start in enumerate(starts):
        if index + 1 < len(starts):
            limit = max(start, starts[index + 1] - 1)
        else:
            column = positions[index][1]
            limit = start
            for number in range(start + 1, len(lines) + 1):
                line = lines[number - 1]
                if _is_content(line) and _indent(line) < column:
                    break
                limit = number
        while limit > start and not _is_content(lines[limit - 1]):
            limit -= 1
        ends.append(limit)
    return starts, ends


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _name_position(text: str) -> tuple[int, int]:
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("name:") or line.lstrip("{ ").startswith('"name"'):
            return number, 1
    return 1, 1


# -- errors -> issues --------------------------------------------------------------------------


def _issue(path: Path, message: str) -> ScenarioIssue:
    return ScenarioIssue(path, None, None, "", message, "file")


def _dedupe(issues: list[ScenarioIssue]) -> list[ScenarioIssue]:
    seen: set[tuple[Any, ...]] = set()
    out = []
    for issue in issues:
        key = (issue.line, issue.column, issue.field, issue.message)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def _issue_from_error(path: Path, document: Any, error: Any) -> ScenarioIssue:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    line, column, parts, schema_loc = _locate(document, loc, error["type"])
    message = _message(error, schema_loc, parts)
    return ScenarioIssue(path, line, column, _format_path(parts), message, error["type"])


def _locate(
    document: Any, loc: tuple[str | int, ...], kind: str
) -> tuple[int, int, list[str | int], tuple[str | int, ...]]:
    """Walk ``loc`` through the parsed file: (line, column, path shown, loc without tags)."""
    node: Any = document
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
            if isinstance(node, CommentedMap):
                key_pos = node.lc.key(elem)
                value_pos = node.lc.value(elem)
                point_at_key = kind == "extra_forbidden" or isinstance(child, dict | list)
                pos = key_pos if point_at_key or value_pos is None else value_pos
                if pos is not None:
                    line, column = pos[0] + 1, pos[1] + 1
            node = child
        elif isinstance(node, list) and isinstance(elem, int) and 0 <= elem < len(node):
            if isinstance(node, CommentedSeq):
                pos = node.lc.item(elem)
                if pos is not None:
                    line, column = pos[0] + 1, pos[1] + 1
            node = node[elem]
        else:
            # A key that is missing (the error is about it), or a value that is not the
            # container pydantic expected: the position of the parent is the best we have.
            if not last:
                parts.extend(
                    e for e in loc[position + 1 :] if not (isinstance(e, str) and e in _TAGS)
                )
            break
    return line, column, parts, tuple(schema_loc)


def _format_path(parts: Sequence[str | int]) -> str:
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
        return f"unknown key {key!r}" + _suggest(key, _keys_at(loc[:-1]), "valid keys")
    if kind == "missing":
        return f"missing required key {loc[-1]!r}" if loc else "missing required value"
    if kind == "union_tag_invalid":
        tag = str(ctx.get("tag"))
        return f"unknown action {tag!r}" + _suggest(tag, list(STEP_ACTIONS), "valid actions")
    if kind == "union_tag_not_found":
        discriminator = str(ctx.get("discriminator", "action")).strip("'")
        return f"missing key {discriminator!r}; valid actions: " + ", ".join(STEP_ACTIONS)
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {value!r}"
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
        return f"expected a value {op} {ctx.get(key)}, got {value!r}"
    if kind in _FRIENDLY:
        return f"{_FRIENDLY[kind]}, got {_describe(value)}"
    return f"{error['msg']} (got {value!r})"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def _suggest(word: str, choices: Sequence[str] | None, label: str) -> str:
    if not choices:
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; {label}: " + ", ".join(choices)


# -- which keys does the model allow at a loc? -------------------------------------------------


def _keys_at(loc: tuple[str | int, ...]) -> list[str] | None:
    """The keys the model accepts at ``loc`` (loc as pydantic gives it, tags included)."""
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
    return [info.alias or name for name, info in models[0].model_fields.items()]


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
