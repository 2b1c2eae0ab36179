"""Sizes and durations as people write them in scenario files.

Why a module of its own: the same spellings ("64M", "0x1000", "500ms") are parsed by the
models, printed by reports and documented in docs/scenarios.md; one table keeps them in step.
Sizes use binary multiples, as QEMU's ``-m 64M`` does: K, KB and KiB all mean 1024.
"""

from __future__ import annotations

import functools
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Final

__all__ = ["DURATION_UNITS", "SIZE_UNITS", "format_size", "parse_duration", "parse_size"]

#: Suffix (lower case) -> bytes. "" is a plain number of bytes.
SIZE_UNITS: Final[dict[str, int]] = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}

#: Suffix (lower case) -> seconds. "" is seconds.
DURATION_UNITS: Final[dict[str, float]] = {
    "": 1.0,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "min": 60.0,
    "h": 3600.0,
}

#: Longest number a size or a duration may spell (2^64 has 20 digits); longer ones are refused
#: before conversion, which takes time quadratic in the digits.
_MAX_DIGITS: Final = 40

_HEX = re.compile(r"0[xX][0-9a-fA-F]+(?:_?[0-9a-fA-F]+)*")
_NUMBER_UNIT = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?)\s*(?P<unit>[A-Za-z]*)")

#: Pattern for the JSON Schema: the strings :func:`parse_size` accepts (case-insensitive units).
SIZE_PATTERN: Final[str] = (
    r"^\s*(0[xX][0-9a-fA-F]+|[0-9]+(\.[0-9]+)?\s*([kKmMgGtT]([iI]?[bB])?|[bB])?)\s*$"
)
#: Pattern for the JSON Schema: the strings :func:`parse_duration` accepts.
DURATION_PATTERN: Final[str] = r"^\s*[0-9]+(\.[0-9]+)?\s*(us|ms|s|m|min|h)?\s*$"


def parse_size(value: str | int) -> int:
    """Return a byte count from an int or a string such as "4K", "64M", "2GiB" or "0x1000".

    :raise ValueError: the value is not a size, is negative, or is not a whole number of bytes.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size like 4K, 2M or an integer, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a size cannot be negative, got {value}")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size like 4K, 2M or an integer, got {value!r}")
    return _parse_size_text(value)


@functools.lru_cache(maxsize=1024)
def _parse_size_text(value: str) -> int:
    """parse_size of a string; cached, since a file spells the same few sizes many times."""
    text = value.strip()
    if _HEX.fullmatch(text):
        _check_digits(text[2:], "size")
        return int(text, 16)
    match = _NUMBER_UNIT.fullmatch(text)
    if match is None or match["unit"].lower() not in SIZE_UNITS:
        raise ValueError(f"expected a size like 4K, 2M or an integer, got {_quote(value)}")
    _check_digits(match["num"], "size")
    try:
        amount = Decimal(match["num"]) * SIZE_UNITS[match["unit"].lower()]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(f"expected a size like 4K, 2M or an integer, got {value!r}") from exc
    if amount != amount.to_integral_value():
        raise ValueError(f"{value!r} is not a whole number of bytes")
    return int(amount)


def _check_digits(number: str, what: str) -> None:
    if len(number) > _MAX_DIGITS:
        raise ValueError(f"a {what} of {len(number)} digits is too large")


def _quote(value: str) -> str:
    """``value`` for a message, cut short when it is long."""
    return repr(value) if len(value) <= 60 else repr(value[:50]) + f" ({len(value)} characters)"


def format_size(size: int) -> str:
    """Return the shortest exact spelling ("16M", "4K", "4097"); parse_size inverts it."""
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {size}")
    for suffix, factor in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def parse_duration(value: str | float) -> float:
    """Return seconds from a number or a string such as "500ms", "2s", "1.5m".

    :raise ValueError: the value is not a duration or is negative.
    """
    if isinstance(value, bool):
        raise ValueError(
            f"expected a duration like 500ms, 2s, 1m or a number of seconds, got {value!r}"
        )
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an integer of hundreds of digits
            raise ValueError("a duration of more than 1000 bits is too large") from None
    elif isinstance(value, str):
        match = _NUMBER_UNIT.fullmatch(value.strip())
        if match is None or match["unit"].lower() not in DURATION_UNITS:
            raise ValueError(
                "expected a duration like 500ms, 2s, 1m or a number of seconds, "
                f"got {_quote(value)}"
            )
        _check_digits(match["num"], "duration")
        seconds = float(match["num"]) * DURATION_UNITS[match["unit"].lower()]
    else:
        raise ValueError(
            f"expected a duration like 500ms, 2s, 1m or a number of seconds, got {value!r}"
        )
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {value!r}")
    return seconds
