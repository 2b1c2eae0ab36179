"""Predicted hashes and bytes against the protocol's own functions on the same bytes."""

from __future__ import annotations

import time

import numpy as np
import pytest

from qmpgmem.guest import protocol
from qmpgmem.model import MemoryModel, ModelContext, Pattern, RegionSpec, Unknown
from qmpgmem.model.content import ZERO, Content
from qmpgmem.model.predict import CHUNK, segment_words, segments_bytes, segments_hash

CTX = ModelContext(engine="qemu", qemu_version=(10, 0, 2))


@pytest.mark.parametrize(
    "segments",
    [
        [(0, 0x1000, Pattern(7))],
        [(0x1000, 0x1000, Pattern(7))],  # offset matters: the pattern is per region offset
        [(0, 0x1000, ZERO)],
        [(0, 8, Pattern(1)), (8, 8, ZERO), (16, 0x1000, Pattern(2**64 - 1))],
        [(0x18, 0x28, Pattern(3)), (0x40, 0x100, ZERO), (0x140, 0x40, Pattern(3))],
    ],
)
def test_hash_matches_hash_of_bytes(segments: list[tuple[int, int, Content]]) -> None:
    data = segments_bytes(segments)
    assert len(data) == sum(s for _, s, _ in segments)
    assert segments_hash(segments) == protocol.hash_bytes(data)


def test_bytes_are_the_pattern_bytes() -> None:
    assert segments_bytes([(0x100, 0x40, Pattern(9))]) == protocol.pattern_bytes(9, 0x100, 0x40)
    assert segments_bytes([(0x100, 0x40, ZERO)]) == bytes(0x40)


def test_single_run_hashes_equal_protocol_helpers() -> None:
    assert segments_hash([(0x2000, 0x3000, Pattern(5))]) == protocol.pattern_hash(5, 0x2000, 0x3000)
    assert segments_hash([(0x2000, 0x3000, ZERO)]) == protocol.zero_hash(0x3000)


def test_unknown_has_no_hash() -> None:
    assert segments_hash([(0, 8, ZERO), (8, 8, Unknown("x"))]) is None


def test_words_come_in_bounded_chunks() -> None:
    size = 2 * CHUNK + 0x1000
    chunks = list(segment_words(Pattern(1), 0, size))
    assert [len(c) * 8 for c in chunks] == [CHUNK, CHUNK, 0x1000]
    assert np.array_equal(chunks[2], protocol.pattern_words(1, 2 * CHUNK, 0x1000))


def test_model_prediction_equals_hash_of_predicted_bytes() -> None:
    m = MemoryModel([RegionSpec("m", 0x40000, "memfd")], CTX)
    m.write("m", 0x1000, 0x10000, 11)
    m.host_write("m", 0x8008, 0x1FF0, 12)
    for off, size in [(0, 0x40000), (0x1008, 0x100), (0x7000, 0x4000), (0x30000, 0x10000)]:
        data = m.expected_bytes("m", off, size)
        assert m.expected_hash("m", off, size) == protocol.hash_bytes(data)
        assert m.expected_hash("m", off, size, "host") == protocol.hash_bytes(
            m.expected_bytes("m", off, size, "host")
        )


def test_bytes_spot_check_against_the_definition() -> None:
    """Word at region offset o of seed s is mix64(s * GOLDEN + o), by the protocol's docstring."""
    m = MemoryModel([RegionSpec("m", 0x2000, "memfd")], CTX)
    m.write("m", 0x100, 0x100, 42)
    data = m.expected_bytes("m", 0xF8, 0x18)
    words = np.frombuffer(data, dtype="<u8")
    assert words[0] == 0
    for i, o in enumerate((0x100, 0x108), start=1):
        z = (42 * protocol.GOLDEN + o) & protocol.MASK64
        z = ((z ^ (z >> 30)) * protocol.MIX1) & protocol.MASK64
        z = ((z ^ (z >> 27)) * protocol.MIX2) & protocol.MASK64
        assert int(words[i]) == z ^ (z >> 31)


def test_64_mib_predicts_well_under_a_second() -> None:
    m = MemoryModel([RegionSpec("m", 128 << 20, "memfd")], CTX)
    m.write("m", 0, 64 << 20, 7)
    m.write("m", 0x1000, 0x2000, 8)  # three runs, one of them zero
    start = time.perf_counter()
    got = m.expected_hash("m", 32 << 20, 64 << 20)
    elapsed = time.perf_counter() - start
    assert got is not None
    assert elapsed < 1.0, f"{elapsed:.2f}s"
    expect = protocol.hash_bytes(
        np.concatenate(
            [
                protocol.pattern_words(7, 32 << 20, 32 << 20),
                np.zeros((32 << 20) // 8, dtype=np.uint64),
            ]
        )
    )
    assert got == expect
