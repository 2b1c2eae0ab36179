"""Sizes and durations as scenario files spell them."""

from __future__ import annotations

import pytest

from qmpgmem.scenario.units import format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (0, 0),
        (4096, 4096),
        ("4096", 4096),
        ("4K", 4096),
        ("4k", 4096),
        ("4KB", 4096),
        ("4KiB", 4096),
        ("4kib", 4096),
        ("64M", 64 << 20),
        ("64MiB", 64 << 20),
        ("2G", 2 << 30),
        ("2GiB", 2 << 30),
        ("1T", 1 << 40),
        ("0x1000", 4096),
        ("0X1F", 31),
        (" 16M ", 16 << 20),
        ("16 M", 16 << 20),
        ("1.5M", 3 << 19),
        ("0.5K", 512),
        ("512B", 512),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", "abc", "4Q", "-4K", -1, "4 K B", "0x", "1.0001K", "K", "4.K", True, "4e3"],
)
def test_parse_size_rejects(text: str | int) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_size_message_says_what_was_expected() -> None:
    with pytest.raises(ValueError, match=r"expected a size like 4K, 2M or an integer, got 'abc'"):
        parse_size("abc")


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        (0, "0"),
        (1, "1"),
        (4096, "4K"),
        (4097, "4097"),
        (16 << 20, "16M"),
        (3 << 19, "1536K"),
        (2 << 30, "2G"),
        (1 << 40, "1T"),
    ],
)
def test_format_size(size: int, expected: str) -> None:
    assert format_size(size) == expected
    assert parse_size(format_size(size)) == size


def test_format_size_rejects_negative() -> None:
    with pytest.raises(ValueError):
        format_size(-1)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (2, 2.0),
        (0.25, 0.25),
        ("2", 2.0),
        ("2s", 2.0),
        ("500ms", 0.5),
        ("250us", 0.00025),
        ("1m", 60.0),
        ("1.5m", 90.0),
        ("2min", 120.0),
        ("1h", 3600.0),
        (" 3 s ", 3.0),
    ],
)
def test_parse_duration(text: str | float, expected: float) -> None:
    assert parse_duration(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "fast", "2 seconds", "-1", -1, "1d", float("nan"), False])
def test_parse_duration_rejects(text: str | float) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
