"""Tag expressions for ``qmpgmem run -m``: ``smoke``, ``conversion and not slow``, ``(a or b)``.

Why pytest's grammar: CI engineers already write ``-m "not slow"`` for pytest, and the pytest
plugin turns the same tags into markers, so one expression selects the same scenarios in both.
Identifiers are tag names (letters, digits, ``_``, ``-``, ``.``, ``:``); ``and`` binds tighter
than ``or``; an expression that does not parse names the column where it went wrong.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass

__all__ = ["TagExpression", "TagExpressionError"]

_TOKEN = re.compile(r"\s*(?:(\()|(\))|([A-Za-z0-9_.:\-]+))")
_KEYWORDS = {"and", "or", "not"}

Predicate = Callable[[frozenset[str]], bool]


class TagExpressionError(ValueError):
    """An expression that does not parse; the message names the column."""


@dataclass(frozen=True)
class _Token:
    text: str
    column: int  # 1-based


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m:
            col = pos + len(text[pos:]) - len(text[pos:].lstrip()) + 1
            raise TagExpressionError(f"column {col}: unexpected character {text[col - 1]!r}")
        out.append(_Token(m.group(m.lastindex or 0), m.start(m.lastindex or 0) + 1))
        pos = m.end()
    return out


def _either(a: Predicate, b: Predicate) -> Predicate:
    return lambda tags: a(tags) or b(tags)


def _both(a: Predicate, b: Predicate) -> Predicate:
    return lambda tags: a(tags) and b(tags)


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokens(text)
        self.i = 0

    def _peek(self) -> str | None:
        return self.tokens[self.i].text if self.i < len(self.tokens) else None

    def _fail(self, what: str) -> TagExpressionError:
        col = self.tokens[self.i].column if self.i < len(self.tokens) else len(self.text) + 1
        return TagExpressionError(f"column {col}: {what}")

    def parse(self) -> Predicate:
        if not self.tokens:
            raise TagExpressionError("column 1: empty expression")
        pred = self._or()
        if self._peek() is not None:
            raise self._fail(f"unexpected {self._peek()!r}")
        return pred

    def _or(self) -> Predicate:
        left = self._and()
        while self._peek() == "or":
            self.i += 1
            left = _either(left, self._and())
        return left

    def _and(self) -> Predicate:
        left = self._not()
        while self._peek() == "and":
            self.i += 1
            left = _both(left, self._not())
        return left

    def _not(self) -> Predicate:
        if self._peek() == "not":
            self.i += 1
            inner = self._not()
            return lambda tags: not inner(tags)
        return self._atom()

    def _atom(self) -> Predicate:
        tok = self._peek()
        if tok == "(":
            self.i += 1
            inner = self._or()
            if self._peek() != ")":
                raise self._fail("expected ')'")
            self.i += 1
            return inner
        if tok is None:
            raise self._fail("expected a tag, 'not' or '('")
        if tok in _KEYWORDS or tok == ")":
            raise self._fail(f"expected a tag, got {tok!r}")
        self.i += 1
        return lambda tags: tok in tags


@dataclass(frozen=True)
class TagExpression:
    """A parsed ``-m`` expression; ``matches(tags)`` says whether a scenario is selected."""

    text: str
    _predicate: Predicate

    @classmethod
    def parse(cls, text: str) -> TagExpression:
        return cls(text, _Parser(text).parse())

    def matches(self, tags: Collection[str]) -> bool:
        return self._predicate(frozenset(tags))
