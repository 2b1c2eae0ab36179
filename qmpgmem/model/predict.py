"""Bytes and range hashes of a list of content runs, computed the way the guest computes them.

Why partial sums: a verify step may cover hundreds of MiB; each run's share of the hash comes
from :mod:`qmpgmem.fasthash` (the compiled helper at memory speed, or numpy in bounded
chunks) without the run's words ever being stored, and the shares add up to the range's hash.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from qmpgmem import fasthash
from qmpgmem.errors import QmpgmemError
from qmpgmem.guest.protocol import MASK64, WORD, finish_hash, pattern_words
from qmpgmem.model.content import Content, Pattern, Unknown, Zero

__all__ = ["UnpredictableContent", "segment_words", "segments_bytes", "segments_hash"]

#: Bytes generated per numpy pass (16 MiB, the same bound protocol.py uses).
CHUNK = 16 << 20


class UnpredictableContent(QmpgmemError):
    """Bytes were asked for a range the model cannot predict; ``segments`` say where and why."""

    def __init__(self, message: str, unknown: Sequence[tuple[int, int, Unknown]]) -> None:
        super().__init__(message)
        self.unknown = list(unknown)


def segment_words(content: Content, lo: int, size: int) -> Iterator[np.ndarray]:
    """The uint64 words of ``content`` over region offsets ``[lo, lo+size)``, in chunks.

    :raise UnpredictableContent: ``content`` is Unknown.
    """
    if isinstance(content, Unknown):
        raise UnpredictableContent(f"[{lo:#x}, {lo + size:#x}) is {content}", [(lo, size, content)])
    done = 0
    while done < size:
        n = min(CHUNK, size - done)
        if isinstance(content, Pattern):
            yield pattern_words(content.seed, lo + done, n)
        else:
            assert isinstance(content, Zero)
            yield np.zeros(n // WORD, dtype=np.uint64)
        done += n


def segments_hash(segments: Sequence[tuple[int, int, Content]]) -> int | None:
    """The guest's range hash over consecutive ``(lo, size, content)`` runs; None if any is Unknown.

    Word indices count from the first run's start, as the guest's HASH does from its gpa.
    """
    if any(isinstance(c, Unknown) for _, _, c in segments):
        return None
    hasher = fasthash.hasher()
    acc, index = 0, 0
    for lo, size, content in segments:
        n = size // WORD
        if isinstance(content, Pattern):
            acc += hasher.pattern_acc(content.seed, lo, n, index)
        else:
            acc += hasher.zero_acc(n, index)
        index += n
    return finish_hash(acc & MASK64, index)


def segments_bytes(segments: Sequence[tuple[int, int, Content]]) -> bytes:
    """The little-endian bytes of the runs (for small ranges: tests, report excerpts).

    :raise UnpredictableContent: some run is Unknown.
    """
    unknown = [(lo, size, c) for lo, size, c in segments if isinstance(c, Unknown)]
    if unknown:
        where = ", ".join(f"[{lo:#x}, {lo + size:#x}) {c}" for lo, size, c in unknown)
        raise UnpredictableContent(f"the model cannot predict {where}", unknown)
    parts = [
        words.astype("<u8").tobytes()
        for lo, size, content in segments
        for words in segment_words(content, lo, size)
    ]
    return b"".join(parts)
