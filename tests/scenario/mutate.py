"""Mutations of scenario files: bytes, lines, keys and values, the kinds of damage a file from
anyone may carry.

Shared by tests/scenario/test_scenario_mutants.py (hypothesis draws the choices, and shrinks a
failure to the smallest mutation) and bench/mutants.py (a seeded random run of 10,000 files
through ``qmpgmem validate``). A :class:`Chooser` makes every choice, so the same mutations run
under either.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class Chooser(Protocol):
    """Where each choice of a mutation comes from."""

    def integer(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        ...

    def choice(self, items: Sequence[T]) -> T:
        """One of ``items``."""
        ...


class RandomChooser:
    """Choices from a seeded :class:`random.Random`."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)

    def choice(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]


def shipped_scenarios() -> list[tuple[str, str]]:
    """(name, text) of every scenario in the library, YAML as written and as JSON."""
    out = []
    yaml = YAML(typ="safe", pure=True)
    for path in sorted((REPO / "scenarios").rglob("*.yaml")):
        text = path.read_text()
        out.append((path.name, text))
        out.append((path.with_suffix(".json").name, json.dumps(yaml.load(text), indent=2)))
    return out


#: Values that broke or strained the loader, and ordinary ones in the wrong place.
VALUES: tuple[str, ...] = (
    "9" * 400,
    "1" * 5001,
    "1" * 5001 + "K",
    "-8",
    "-4096",
    "0",
    "0s",
    "0x" + "f" * 50,
    "4097",
    "1.5",
    "1e400",
    ".inf",
    "-.inf",
    ".nan",
    "~",
    "null",
    "true",
    "no",
    "2024-01-01",
    "2001-12-14t21:59:43.10-05:00",
    "!!binary aGVsbG8=",
    "!!int x",
    "!!float y",
    "!!timestamp 2024-01-01",
    "!!set {a, b}",
    "!local x",
    '"\\0"',
    '"a\\x00b"',
    '"\\ud800"',
    '"\\e[31mred"',
    '"x,debug-threads=on"',
    '"line\\nbreak"',
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]",
    "[" * 300 + "]" * 300,
    "{a: " * 100 + "1" + "}" * 100,
    "*undefined",
    "&anchor value",
    "&l [a, a, a, a, a, a, a, a, a, a]",
    "[*l, *l, *l, *l, *l, *l, *l, *l, *l, *l]",
    "|\n  block text",
    ">-\n  folded",
    "x" * 70_000,
    "'unterminated",
    '"unterminated',
    "{unclosed: 1",
    "a: b: c",
    "- list",
    "? complex\n: key",
    "<<: {merged: 1}",
    "%YAML 1.2",
    "---",
    "...",
    "\t",
    "",
)

#: Keys of the format, and near misses.
KEYS: tuple[str, ...] = (
    "name",
    "description",
    "vm",
    "steps",
    "action",
    "range",
    "region",
    "offset",
    "size",
    "seed",
    "expect",
    "timeout",
    "memory",
    "qemu_args",
    "guest",
    "kernel",
    "path",
    "backend",
    "vcpus",
    "vcpu",
    "arguments",
    "command",
    "sise",
    "<<",
    "1",
    "null",
    '"quoted key"',
    "",
)

#: Text dropped in anywhere: YAML's indicators, and bytes that are not text.
SNIPPETS: tuple[bytes, ...] = (
    b"[",
    b"]",
    b"{",
    b"}",
    b"&a ",
    b"*a",
    b"!!int ",
    b"!!binary ",
    b"\t",
    b": ",
    b'"',
    b"'",
    b"#",
    b"\n---\n",
    b"%",
    b"|",
    b">",
    b"\x00",
    b"\xff",
    b"\xc3",
    b"\xed\xa0\x80",
    b"\r",
    b"\x1b[2J",
    b"\xef\xbb\xbf",
    b"\\",
    b",",
)


def _byte_flip(data: bytes, c: Chooser) -> bytes:
    if not data:
        return bytes([c.integer(0, 255)])
    i = c.integer(0, len(data) - 1)
    return data[:i] + bytes([c.integer(0, 255)]) + data[i + 1 :]


def _byte_delete(data: bytes, c: Chooser) -> bytes:
    if not data:
        return data
    i = c.integer(0, len(data) - 1)
    return data[:i] + data[i + c.integer(1, 16) :]


def _byte_insert(data: bytes, c: Chooser) -> bytes:
    i = c.integer(0, len(data))
    return data[:i] + c.choice(SNIPPETS) * c.integer(1, 3) + data[i:]


def _truncate(data: bytes, c: Chooser) -> bytes:
    return data[: c.integer(0, len(data))]


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def _line_delete(data: bytes, c: Chooser) -> bytes:
    lines = _lines(data)
    del lines[c.integer(0, len(lines) - 1)]
    return b"\n".join(lines)


def _line_duplicate(data: bytes, c: Chooser) -> bytes:
    lines = _lines(data)
    i = c.integer(0, len(lines) - 1)
    lines[i:i] = [lines[i]] * c.integer(1, 3)
    return b"\n".join(lines)


def _line_swap(data: bytes, c: Chooser) -> bytes:
    lines = _lines(data)
    i, j = c.integer(0, len(lines) - 1), c.integer(0, len(lines) - 1)
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _line_indent(data: bytes, c: Chooser) -> bytes:
    lines = _lines(data)
    i = c.integer(0, len(lines) - 1)
    how = c.choice((b"  ", b" ", b"\t", b"-", b"- "))
    lines[i] = how + lines[i] if c.integer(0, 1) else lines[i].lstrip(b" ")
    return b"\n".join(lines)


def _line_splice(data: bytes, c: Chooser, donors: Sequence[bytes]) -> bytes:
    lines = _lines(data)
    donor = _lines(c.choice(donors))
    lines.insert(c.integer(0, len(lines)), donor[c.integer(0, len(donor) - 1)])
    return b"\n".join(lines)


def _keyed_lines(lines: list[bytes]) -> list[int]:
    return [i for i, line in enumerate(lines) if b":" in line]


def _key_rename(data: bytes, c: Chooser) -> bytes:
    lines = _lines(data)
    keyed = _keyed_lines(lines)
    if not keyed:
        return data
    i = c.choice(keyed)
    line = lines[i]
    colon = line.index(b":")
    start = len(line[:colon]) - len(line[:colon].lstrip(b' -{"'))
    lines[i] = line[:start] + c.choice(KEYS).encode() + line[colon:]
    return b"\n".join(lines)


def _value_replace(data: bytes, c: Chooser) -> bytes:
    lines = _lines(data)
    keyed = _keyed_lines(lines)
    if not keyed:
        return data
    i = c.choice(keyed)
    line = lines[i]
    colon = line.index(b":")
    value = c.choice(VALUES).encode("utf-8", "surrogatepass")
    if line.rstrip().endswith(b","):  # JSON: keep the comma
        value += b","
    lines[i] = line[: colon + 1] + b" " + value
    return b"\n".join(lines)


def _value_nest(data: bytes, c: Chooser) -> bytes:
    lines = _lines(data)
    keyed = _keyed_lines(lines)
    if not keyed:
        return data
    i = c.choice(keyed)
    line = lines[i]
    colon = line.index(b":")
    depth = c.choice((10, 63, 64, 65, 200, 1000))
    rest = line[colon + 1 :].strip().rstrip(b",") or b"1"
    lines[i] = line[: colon + 1] + b" " + b"[" * depth + rest + b"]" * depth
    return b"\n".join(lines)


def _alias_bomb(data: bytes, c: Chooser) -> bytes:
    width = c.integer(2, 10)
    levels = c.integer(2, 12)
    bomb = [b"x0: &x0 [" + b", ".join([b"lol"] * width) + b"]"]
    for level in range(1, levels):
        items = b", ".join([b"*x%d" % (level - 1)] * width)
        bomb.append(b"x%d: &x%d [%s]" % (level, level, items))
    return b"\n".join(bomb) + b"\n" + data


Mutation = Callable[[bytes, Chooser], bytes]

MUTATIONS: tuple[Mutation, ...] = (
    _byte_flip,
    _byte_delete,
    _byte_insert,
    _truncate,
    _line_delete,
    _line_duplicate,
    _line_swap,
    _line_indent,
    _key_rename,
    _value_replace,
    _value_replace,
    _value_replace,
    _value_nest,
    _alias_bomb,
)


def mutate(
    data: bytes, c: Chooser, donors: Sequence[bytes] = (), rounds: int | None = None
) -> bytes:
    """``data`` after 1 to 3 mutations (``rounds`` if given); ``donors`` are other files whose
    lines may be spliced in."""
    for _ in range(rounds if rounds is not None else c.integer(1, 3)):
        if donors and c.integer(0, 9) == 0:
            data = _line_splice(data, c, donors)
        else:
            data = c.choice(MUTATIONS)(data, c)
    return data
