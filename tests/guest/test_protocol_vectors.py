"""The pattern and the range hash of qmpgmem.guest.protocol, pinned.

Why: the guest's C code (images/microguest/mem.c) and the host's numpy code must agree bit
for bit forever. An independent plain-integer implementation of the definitions checks the
numpy one, and a few known answers catch both drifting together.
"""

from __future__ import annotations

import pytest

from qmpgmem.guest import protocol as p

M = (1 << 64) - 1


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M
    return z ^ (z >> 31)


def ref_pattern(seed: int, offset: int, size: int) -> list[int]:
    return [mix64((seed * 0x9E3779B97F4A7C15 + o) & M) for o in range(offset, offset + size, 8)]


def ref_hash(words: list[int]) -> int:
    acc = 0
    for i, w in enumerate(words):
        v = ((w ^ (i * 0x9E3779B97F4A7C15 & M)) * 0xFF51AFD7ED558CCD) & M
        acc = (acc + (v ^ (v >> 32))) & M
    return mix64(acc ^ len(words))


CASES = [
    (0, 0, 8),
    (1, 0, 4096),
    (1, 8, 24),
    (M, 0x1000, 40),
    (0x123456789ABCDEF, 1 << 40, 4096 + 8),
    (7, 0xFFF8, 8 * 33),
]


@pytest.mark.parametrize(("seed", "offset", "size"), CASES)
def test_pattern_and_hash_match_the_definition(seed: int, offset: int, size: int) -> None:
    words = ref_pattern(seed, offset, size)
    assert [int(w) for w in p.pattern_words(seed, offset, size)] == words
    assert p.pattern_bytes(seed, offset, size) == b"".join(w.to_bytes(8, "little") for w in words)
    assert p.pattern_hash(seed, offset, size) == ref_hash(words)
    assert p.hash_bytes(p.pattern_bytes(seed, offset, size)) == ref_hash(words)


def test_sub_range_of_a_pattern_is_the_pattern_at_that_offset() -> None:
    whole = p.pattern_bytes(3, 0x100, 0x400)
    assert whole[0x80:0x180] == p.pattern_bytes(3, 0x180, 0x100)


def test_zero_hash_and_empty_range() -> None:
    assert p.zero_hash(4096) == ref_hash([0] * 512)
    assert p.hash_bytes(b"") == ref_hash([]) == 0


def test_hash_spans_numpy_chunks() -> None:
    """A range longer than one numpy pass hashes as one range (chunk seams invisible)."""
    size = (p._CHUNK_WORDS + 3) * 8
    data = p.pattern_bytes(9, 0, size)
    assert p.pattern_hash(9, 0, size) == p.hash_bytes(data)


def test_known_answers() -> None:
    """Values computed once from the definition; a change here breaks every stored result."""
    assert p.pattern_hash(1, 0, 0x1000) == 0x04CA406755062E72
    assert p.zero_hash(0x1000) == ref_hash([0] * 512)
    assert mix64(1) == 0x5692161D100B05E5


def test_unaligned_ranges_are_refused() -> None:
    with pytest.raises(ValueError):
        p.pattern_words(0, 4, 8)
    with pytest.raises(ValueError):
        p.pattern_hash(0, 0, 12)
