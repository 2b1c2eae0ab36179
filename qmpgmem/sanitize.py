"""Scenario text on its way to a terminal, a file name or a shell script.

Why one module: a scenario's name (and every message that quotes it) is the scenario
author's text, not ours. On a terminal, an escape sequence in it can erase a ``FAILED`` line
and print ``PASSED``; in a file name it can collide with another scenario's; in a shell
script a newline ends a comment and starts a command. Each sink gets one function here, and
every caller uses it (docs/security.md).
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from typing import Final

__all__ = ["file_name_part", "printable", "shell_comment", "shell_word"]

#: Unicode categories shown escaped: controls (C0, DEL, C1), format characters (bidi
#: overrides, zero-width joiners), surrogates, private use, unassigned, line and paragraph
#: separators.
_HIDDEN: Final = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest part of a file name taken from a scenario name (the rest is ours: engine, pid).
FILE_NAME_PART_MAX: Final = 64


def _escape(char: str) -> str:
    code = ord(char)
    if char == "\n":
        return "\\n"
    if char == "\r":
        return "\\r"
    if char == "\t":
        return "\\t"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(text: str) -> str:
    """``text`` with every character a terminal would act on, or hide, escaped visibly.

    ``\\x1b`` for ESC, ``\\r``, ``\\n``, ``\\u202e`` for a right-to-left override; a
    backslash itself stays as it is. Plain text (any script, spaces) is unchanged.
    """
    if text.isprintable():
        return text
    return "".join(
        _escape(c) if c != " " and unicodedata.category(c) in _HIDDEN else c for c in text
    )


def file_name_part(text: str, limit: int = FILE_NAME_PART_MAX) -> str:
    """A readable piece of a file name from ``text``: ASCII letters, digits, ``._-``.

    Not unique (``dup x`` and ``dup_x`` give the same part): callers that need a directory
    of their own add a suffix and create it exclusively (``rundir.exclusive_dir``).
    """
    part = _NAME_CHARS.sub("_", text).strip("._") or "scenario"
    return part[:limit]


def shell_word(word: str) -> str:
    """One POSIX ``sh`` word that expands to ``word``, on one line.

    ``shlex.quote`` when the word has no control characters; otherwise a ``printf`` of the
    word in octal escapes (``"$(printf '\\012')"``), so no newline ever reaches the script.
    Command substitution drops trailing newlines: such a word is meant as a ``-k``
    substring, which still selects the same scenario.
    """
    if word.isprintable():
        return shlex.quote(word)
    fmt = "".join(
        f"\\{ord(c):03o}" if ord(c) < 0x20 or ord(c) == 0x7F else c
        for c in word.replace("\\", "\\\\").replace("%", "%%")
    )
    return f'"$(printf {shlex.quote(fmt)})"'


def shell_comment(text: str) -> str:
    """A ``#`` comment line of ``text``: control characters escaped, never two lines."""
    return "# " + printable(text)
