"""Scenario text -> plain JSON values and where each one is written, within limits.

Why not ruamel's round-trip loader: it builds the whole document (comments included) in pure
Python, recursively, and expands aliases while later walks copy them. A 1 KiB file of nested
aliases ("billion laughs") then grows to gigabytes, a few hundred nested brackets end in a
RecursionError, and 60,000 steps take minutes. Here the YAML event stream (libyaml through
ruamel's C parser when it is installed, ruamel's own parser otherwise) is composed without
recursion, stopping at the first limit crossed:

- nesting deeper than :data:`MAX_DEPTH` lists and mappings;
- aliases that would add more than ``max(ALIAS_BUDGET, values written so far)`` values to the
  document (aliases are shared, never copied, but validation walks them as a tree);
- more than one document, a key that is not a string, a key given twice.

Values are what JSON can carry, since QMP arguments go to QEMU as JSON and names end up in argv,
file names and reports: strings without NUL characters, 64-bit integers, finite floats, booleans,
null, lists, mappings with string keys. Plain scalars resolve by the YAML 1.2 core schema as
ruamel's resolver writes it (so ``0x10`` is 16), except that timestamps stay the text written
(YAML 1.2 has no timestamp type; ``2024-01-01`` is a string). Explicit tags other than the core
ones (``!!binary``, ``!!timestamp``, ``!!set``, local ``!tags``) are refused.

Each position is 1-based (line, column); :class:`Node` holds the positions under a list or a
mapping, so an error found later at ``steps.3.range.size`` can name its line.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
)
from ruamel.yaml.reader import ReaderError

try:  # libyaml; ruamel.yaml[libyaml] installs it on CPython
    from ruamel.yaml.cyaml import CParser  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the installation
    CParser = None

__all__ = [
    "ALIAS_BUDGET",
    "C_PARSER",
    "MAX_DEPTH",
    "PURE_PARSER_LIMIT",
    "Node",
    "Parsed",
    "Position",
    "SourceError",
    "gc_paused",
    "parse_json",
    "parse_yaml",
]

#: Lists and mappings inside each other; a scenario needs about 8, a QMP reply rarely 10.
MAX_DEPTH: Final = 64
#: Values aliases may add to a document beyond the number written in it.
ALIAS_BUDGET: Final = 10_000
#: The integers a value may hold: QMP's int64 and uint64.
INT_MIN: Final = -(2**63)
INT_MAX: Final = 2**64 - 1
#: Whether libyaml parses (else ruamel's pure-Python parser, about 10 times slower).
C_PARSER: Final = CParser is not None

#: 1-based (line, column) of a scalar, or of a key.
Position = tuple[int, int]


class Node:
    """Where a list or a mapping is written, and where everything in it is.

    ``children`` maps each key (a list: each index) to the child's :class:`Node` or, for a
    scalar, its :data:`Position`; ``keys`` holds each key's own position (mappings only).
    """

    __slots__ = ("children", "column", "keys", "line")

    def __init__(
        self,
        line: int,
        column: int,
        children: dict[str, Node | Position] | list[Node | Position],
        keys: dict[str, Position] | None,
    ) -> None:
        self.line = line
        self.column = column
        self.children = children
        self.keys = keys

    @property
    def position(self) -> Position:
        """Where the list or mapping starts."""
        return self.line, self.column


@dataclass(frozen=True)
class Parsed:
    """A parsed document: its value, and positions (None when the parser gave none)."""

    value: Any
    root: Node | Position | None


class SourceError(Exception):
    """The text is not a scenario document: where, which field, what is wrong, a type."""

    def __init__(
        self,
        line: int | None,
        column: int | None,
        message: str,
        kind: str,
        path: tuple[str | int, ...] = (),
    ) -> None:
        super().__init__(message)
        self.line = line
        self.column = column
        self.message = message
        self.kind = kind
        self.path = path


# -- YAML ---------------------------------------------------------------------------------------


def parse_yaml(text: str) -> Parsed:
    """One YAML document (or none: value None) with positions.

    libyaml reads YAML 1.1, which refuses a few things YAML 1.2 allows (a ``:`` inside a
    plain scalar in a flow mapping: ``{at: 12:30}``); a file libyaml refuses is read again
    by ruamel's parser, which decides, when it is small enough for that to be quick.

    :raise SourceError: a syntax error, or a limit or rule above broken.
    """
    try:
        return _compose(text, pure=not C_PARSER)
    except SourceError as exc:
        if exc.kind != "yaml_syntax" or not C_PARSER or len(text) > PURE_PARSER_LIMIT:
            raise
    return _compose(text, pure=True)


#: Largest text ruamel's pure-Python parser reads again after libyaml refused it.
PURE_PARSER_LIMIT: Final = 128 << 10


def _compose(text: str, pure: bool) -> Parsed:
    try:
        with gc_paused():
            return _Composer(_next_event(text, pure)).compose()
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(part for part in (exc.context, exc.problem) if part)
        raise SourceError(
            mark.line + 1 if mark is not None else 1,
            mark.column + 1 if mark is not None else 1,
            f"invalid YAML: {problem or exc}",
            "yaml_syntax",
        ) from None
    except ReaderError as exc:
        line, column = _offset_position(text, exc.position)
        reason = f"character {exc.character!r} is not allowed in YAML text ({exc.reason})"
        raise SourceError(line, column, f"invalid YAML: {reason}", "yaml_syntax") from None
    except (YAMLError, UnicodeError) as exc:
        raise SourceError(1, 1, f"invalid YAML: {exc}", "yaml_syntax") from None


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection inside: composing creates an object per value, none in
    a cycle, and each collection would walk all of them again (a third of the time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _next_event(text: str, pure: bool) -> Callable[[], Any]:
    """A function returning the next event each call: libyaml's, or ruamel's own."""
    if pure or CParser is None:
        events: Iterator[Any] = iter(YAML(typ="safe", pure=True).parse(text))
        return events.__next__
    return CParser(text).get_event  # type: ignore[no-any-return]


_NO_KEY: Final = object()
_MERGE: Final = object()


class _Frame:
    """A list or mapping being composed."""

    __slots__ = ("anchor", "height", "key", "key_pos", "merges", "node", "size", "value")

    def __init__(self, value: Any, node: Node, anchor: str | None) -> None:
        self.value = value
        self.node = node
        self.anchor = anchor
        self.size = 1  # values in it, counting aliased ones each time they appear
        self.height = 1  # lists and mappings from here down, this one included
        self.key: Any = _NO_KEY  # mappings: the key whose value comes next
        self.key_pos: Position = (0, 0)
        self.merges: list[tuple[Any, Node | Position]] = []  # mappings: << sources


#: An anchored value: (value, positions, size, height).
_Anchored = tuple[Any, "Node | Position", int, int]


class _Composer:
    def __init__(self, next_event: Callable[[], Any]) -> None:
        self.next_event = next_event
        self.stack: list[_Frame] = []
        self.anchors: dict[str, _Anchored] = {}
        self.written = 0  # values written in the file
        self.added = 0  # values aliases added
        self.result: tuple[Any, Node | Position] | None = None

    # The loop is the hot path of validation (one pass over every event of the file).
    def compose(self) -> Parsed:
        next_event = self.next_event
        next_event()  # StreamStart
        if type(next_event()) is StreamEndEvent:
            return Parsed(None, None)
        stack = self.stack
        add = self._add
        while True:
            event = next_event()
            kind = type(event)
            if kind is ScalarEvent:
                mark = event.start_mark
                pos = (mark.line + 1, mark.column + 1)
                self.written += 1
                text = event.value
                if (  # most scalars: a plain word ("guest.write", "ram0", "4M")
                    event.tag is None
                    and text
                    and text[0] not in _RESOLVABLE
                    and event.implicit[0]
                    and text.isascii()
                    and "\x00" not in text
                    and text != "<<"
                ):
                    value = text
                else:
                    value, plain_merge = self._scalar(event, pos)
                    if plain_merge and stack and stack[-1].key is _NO_KEY:
                        top = stack[-1]
                        if top.node.keys is not None:
                            top.key, top.key_pos = _MERGE, pos
                            continue
                if event.anchor is not None:
                    self.anchors[event.anchor] = (value, pos, 1, 0)
                add(value, pos, 1, 0)
            elif kind is MappingStartEvent or kind is SequenceStartEvent:
                mark = event.start_mark
                line, column = mark.line + 1, mark.column + 1
                self.written += 1
                if len(stack) >= MAX_DEPTH:
                    self._fail(
                        (line, column),
                        f"lists and mappings are nested more than {MAX_DEPTH} deep here",
                        "too_deep",
                    )
                if stack and stack[-1].key is _NO_KEY and stack[-1].node.keys is not None:
                    self._fail(
                        (line, column),
                        "a mapping key must be a string, not a "
                        + ("mapping" if kind is MappingStartEvent else "list"),
                        "key_type",
                    )
                self._check_tag(
                    event.tag,
                    (line, column),
                    "map" if kind is MappingStartEvent else "seq",
                )
                if kind is MappingStartEvent:
                    keys: dict[str, Position] = {}
                    node = Node(line, column, {}, keys)
                    stack.append(_Frame({}, node, event.anchor))
                else:
                    node = Node(line, column, [], None)
                    stack.append(_Frame([], node, event.anchor))
            elif kind is MappingEndEvent or kind is SequenceEndEvent:
                frame = stack.pop()
                if frame.merges:
                    self._merge(frame)
                if frame.anchor is not None:
                    self.anchors[frame.anchor] = (
                        frame.value,
                        frame.node,
                        frame.size,
                        frame.height,
                    )
                add(frame.value, frame.node, frame.size, frame.height)
            elif kind is AliasEvent:
                self._alias(event)
            elif kind is DocumentEndEvent:
                break
            else:  # pragma: no cover - libyaml sends nothing else inside a document
                mark = event.start_mark
                self._fail((mark.line + 1, mark.column + 1), "unexpected YAML event", "yaml")
        event = next_event()
        if type(event) is DocumentStartEvent:
            mark = event.start_mark
            self._fail(
                (mark.line + 1, mark.column + 1),
                "a second YAML document; a scenario file holds one",
                "yaml_syntax",
            )
        assert self.result is not None
        return Parsed(*self.result)

    def _add(self, value: Any, pos: Node | Position, size: int, height: int) -> None:
        stack = self.stack
        if not stack:
            self.result = (value, pos)
            return
        top = stack[-1]
        keys = top.node.keys
        if keys is None:  # a list
            top.value.append(value)
            top.node.children.append(pos)  # type: ignore[union-attr]
        elif top.key is _NO_KEY:  # a mapping's key (a scalar; collections fail earlier)
            where = pos if isinstance(pos, tuple) else pos.position
            if not isinstance(value, str):
                shown = "null" if value is None else json.dumps(value)
                self._fail(
                    where,
                    f"a mapping key must be a string, got {shown}; quote it: '{shown}'",
                    "key_type",
                )
            if value in top.value:
                self._fail(
                    where,
                    f"duplicate key {value!r} (first at line {keys[value][0]})",
                    "duplicate_key",
                    value,
                )
            top.key, top.key_pos = value, where
            return
        elif top.key is _MERGE:
            top.merges.append((value, pos))
            top.key = _NO_KEY
        else:
            top.value[top.key] = value
            keys[top.key] = top.key_pos
            top.node.children[top.key] = pos
            top.key = _NO_KEY
        top.size += size
        if height >= top.height:
            top.height = height + 1

    def _alias(self, event: Any) -> None:
        mark = event.start_mark
        pos = (mark.line + 1, mark.column + 1)
        name = event.anchor
        anchored = self.anchors.get(name)
        if anchored is None:
            if any(frame.anchor == name for frame in self.stack):
                self._fail(pos, f"alias *{name} inside the value it names", "alias")
            self._fail(pos, f"alias *{name} names no anchor &{name} before it", "alias")
        value, node, size, height = anchored
        self.added += size
        budget = max(ALIAS_BUDGET, self.written)
        if self.added > budget:
            self._fail(
                pos,
                f"aliases expand to more than {budget} values here (a scenario file may "
                "add at most as many through aliases as it writes, or 10000)",
                "alias_budget",
            )
        if len(self.stack) + height > MAX_DEPTH:
            self._fail(
                pos,
                f"alias *{name} nests lists and mappings more than {MAX_DEPTH} deep here",
                "too_deep",
            )
        self._add(value, node, size, height)

    def _merge(self, frame: _Frame) -> None:
        """YAML merge keys (``<<: *base`` or a list of them): keys the mapping lacks."""
        mapping: dict[str, Any] = frame.value
        keys = frame.node.keys
        children = frame.node.children
        assert keys is not None and isinstance(children, dict)
        for value, pos in frame.merges:
            sources = value if isinstance(value, list) else [value]
            source_nodes = pos.children if isinstance(value, list) else [pos]  # type: ignore[union-attr]
            for source, source_node in zip(sources, source_nodes, strict=True):
                if not isinstance(source, dict) or not isinstance(source_node, Node):
                    where = source_node if isinstance(source_node, tuple) else source_node.position
                    self._fail(where, "<< merges a mapping or a list of mappings", "merge")
                assert source_node.keys is not None and isinstance(source_node.children, dict)
                for key, item in source.items():
                    if key not in mapping:
                        mapping[key] = item
                        keys[key] = source_node.keys[key]
                        children[key] = source_node.children[key]
                        self.added += 1
        if self.added > max(ALIAS_BUDGET, self.written):
            self._fail(frame.node.position, "merge keys add too many values", "alias_budget")

    def _scalar(self, event: Any, pos: Position) -> tuple[Any, bool]:
        """(value, whether it is a plain ``<<``)."""
        text: str = event.value
        tag = event.tag
        if tag is not None:
            tag = str(tag)
            if tag != "!":
                return self._tagged(text, tag, pos), False
        elif event.implicit[0]:  # plain: resolve
            if text == "<<":
                return text, True
            return self._resolve(text, pos), False
        return self._string(text, pos), False

    def _string(self, text: str, pos: Position) -> str:
        if "\x00" in text:
            self._fail(
                pos,
                "a NUL character (\\0) cannot be part of a scenario string: QEMU arguments, "
                "file names and reports cannot carry it",
                "nul",
            )
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                self._fail(pos, "a string with a lone surrogate (\\ud800-\\udfff)", "unicode")
        return text

    def _resolve(self, text: str, pos: Position) -> Any:
        if not text or text[0] not in _RESOLVABLE:
            return self._string(text, pos) if text else None
        if text in _NULLS:
            return None
        if text in _BOOLS:
            return _BOOLS[text]
        if _INT.fullmatch(text):
            return self._int(text, pos)
        if _FLOAT.fullmatch(text):
            return self._float(text, pos)
        return self._string(text, pos)

    def _int(self, text: str, pos: Position) -> int:
        digits = text.replace("_", "")
        sign = -1 if digits[0] == "-" else 1
        digits = digits.lstrip("+-")
        base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2], 10)
        if base != 10:
            digits = digits[2:]
        if len(digits) > 40:
            self._fail(pos, f"an integer of {len(digits)} digits is beyond 64 bits", "int_range")
        value = sign * int(digits, base)
        if not INT_MIN <= value <= INT_MAX:
            self._fail(
                pos,
                f"{text} is beyond 64 bits (QMP takes integers from -2^63 to 2^64-1)",
                "int_range",
            )
        return value

    def _float(self, text: str, pos: Position) -> float:
        lowered = text.lower()
        value = math.inf if "inf" in lowered or "nan" in lowered else float(text.replace("_", ""))
        if not math.isfinite(value):
            self._fail(
                pos,
                f"{text} is not a finite number; JSON has no infinity or NaN",
                "float_range",
            )
        return value

    def _tagged(self, text: str, tag: str, pos: Position) -> Any:
        name = tag.removeprefix("tag:yaml.org,2002:")
        if name == "str":
            return self._string(text, pos)
        if name == "null":
            if text in _NULLS or text == "":
                return None
        elif name == "bool":
            if text in _BOOLS:
                return _BOOLS[text]
        elif name == "int":
            if _INT.fullmatch(text):
                return self._int(text, pos)
        elif name == "float":
            if _INT.fullmatch(text):
                return float(self._int(text, pos))
            if _FLOAT.fullmatch(text):
                return self._float(text, pos)
        else:
            self._check_tag(tag, pos, "scalar")
        self._fail(pos, f"!!{name} {text!r} is not {_TAG_WORDS[name]}", "yaml_tag")

    def _check_tag(self, tag: Any, pos: Position, kind: str) -> None:
        if tag is None:
            return
        tag = str(tag)
        if tag == "!" or (kind != "scalar" and tag == f"tag:yaml.org,2002:{kind}"):
            return
        shown = "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:") else tag
        self._fail(
            pos,
            f"tag {shown} is not part of the scenario format: its values are JSON's "
            "(strings, numbers, true/false, null, lists, mappings)",
            "yaml_tag",
        )

    def _fail(self, pos: Position, message: str, kind: str, key: str | None = None) -> NoReturn:
        path = self._path() + ((key,) if key is not None else ())
        raise SourceError(pos[0], pos[1], message, kind, path)

    def _path(self) -> tuple[str | int, ...]:
        path: list[str | int] = []
        for frame in self.stack:
            if frame.node.keys is None:
                path.append(len(frame.value))
            elif isinstance(frame.key, str):
                path.append(frame.key)
        return tuple(path)


_RESOLVABLE: Final = frozenset("-+.0123456789~nNtTfF")
_NULLS: Final = frozenset({"~", "null", "Null", "NULL"})
_BOOLS: Final = {
    "true": True,
    "True": True,
    "TRUE": True,
    "false": False,
    "False": False,
    "FALSE": False,
}
# ruamel's YAML 1.2 patterns, with a digit required where ruamel would crash without one.
_INT: Final = re.compile(
    r"[-+]?(?:0b[0-1_]*[01][0-1_]*|0o[0-7_]*[0-7][0-7_]*|0x[0-9a-fA-F_]*[0-9a-fA-F][0-9a-fA-F_]*"
    r"|[0-9_]*[0-9][0-9_]*)"
)
_FLOAT: Final = re.compile(
    r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
    r"|[-+]?\.[0-9_]*[0-9][0-9_]*(?:[eE][-+][0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)"
    r"|\.(?:nan|NaN|NAN)"
)
_TAG_WORDS: Final = {
    "null": "null",
    "bool": "a boolean (true or false)",
    "int": "an integer",
    "float": "a number",
}


def _offset_position(text: str, offset: int) -> Position:
    offset = max(0, min(offset, len(text)))
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


# -- JSON ---------------------------------------------------------------------------------------


def parse_json(text: str) -> Parsed:
    """A JSON document, with positions when the YAML parser reads it too (it nearly always
    does: JSON is YAML's flow style).

    Duplicate keys are refused, as in YAML files (Python's json keeps the last).

    :raise SourceError: a syntax error, or a limit or rule broken.
    """
    if not text.strip():
        return Parsed(None, None)
    try:
        parsed: Parsed | None = parse_yaml(text)
    except SourceError as exc:
        if exc.kind != "yaml_syntax":
            raise
        parsed = None
    # The YAML parser accepts more than JSON (comments, plain strings); json decides what is
    # valid JSON. After parse_yaml the depth is bounded, so json cannot recurse too deep.
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise SourceError(
            exc.lineno, exc.colno, f"invalid JSON: {exc.msg}", "json_syntax"
        ) from None
    except _JsonRuleError as exc:
        raise SourceError(1, 1, str(exc), exc.kind) from None
    except RecursionError:
        raise SourceError(
            1, 1, f"lists and mappings are nested more than {MAX_DEPTH} deep", "too_deep"
        ) from None
    except ValueError as exc:  # an integer too long for int()
        raise SourceError(1, 1, f"invalid JSON: {exc}", "json_syntax") from None
    if parsed is not None:
        return parsed
    # JSON the YAML parser cannot read: the values without positions, checked the same way.
    _check_plain(value, 0)
    return Parsed(value, None)


class _JsonRuleError(ValueError):
    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JsonRuleError(f"duplicate key {key!r}", "duplicate_key")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _JsonRuleError(f"{name} is not a JSON number", "float_range")


def _check_plain(value: Any, depth: int) -> None:
    """The rules of the YAML composer, for JSON read without it (no positions)."""
    check: Callable[[Any, int], None] = _check_plain
    if depth > MAX_DEPTH:
        raise SourceError(
            1, 1, f"lists and mappings are nested more than {MAX_DEPTH} deep", "too_deep"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            check(key, depth + 1)
            check(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            check(item, depth + 1)
    elif isinstance(value, str):
        if "\x00" in value:
            raise SourceError(1, 1, "a NUL character (\\0) in a string", "nul")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SourceError(1, 1, "a string with a lone surrogate", "unicode") from None
    elif isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
        raise SourceError(1, 1, "an integer beyond 64 bits", "int_range")
