"""The host's range hashes at memory speed: expected patterns, zeros, and memory in place.

Why apart from :mod:`qmpgmem.guest.protocol`: that module is the definition (numpy, one word
array per pass, ~0.5 GiB/s); checking a 256 MiB verify against it cost more than the guest's
own work. Here the same sums come from a compiled helper (:mod:`.build`, ``rangehash.c``: no
temporaries, vector clones, one thread per core) when the host has a C compiler, else from
the numpy definition itself — identical results either way (tests/fasthash pins them against
the definition on random ranges). ``QMPGMEM_FASTHASH=numpy`` forces the numpy path.

Everything is a *partial sum* (``acc``) plus a finish, as the hash is defined: a range split
anywhere hashes as the sum of its parts, which is how the memory model adds up runs.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import threading
from typing import Final, Protocol

import numpy as np

from qmpgmem.fasthash.build import load
from qmpgmem.guest import protocol
from qmpgmem.guest.protocol import GOLDEN, MASK64, WORD, finish_hash

__all__ = [
    "CompiledHasher",
    "Hasher",
    "NumpyHasher",
    "hash_address",
    "hash_buffer",
    "hasher",
    "pattern_hash",
    "zero_hash",
]

log = logging.getLogger(__name__)

#: ``numpy`` (or ``0``) forces the numpy path; anything else (or unset) uses the helper.
ENV: Final = "QMPGMEM_FASTHASH"
_MEMORY, _PATTERN, _ZERO = 0, 1, 2
#: Words per numpy pass (16 MiB), the bound protocol.py uses.
_CHUNK: Final = 1 << 21


class Hasher(Protocol):
    """Partial sums of the range hash; ``index`` is the range index of the first word."""

    name: str

    def pattern_acc(self, seed: int, offset: int, nwords: int, index: int = 0) -> int: ...

    def zero_acc(self, nwords: int, index: int = 0) -> int: ...

    def memory_acc(self, addr: int, nwords: int, index: int = 0, populate: bool = False) -> int:
        """Words read at ``addr``; ``populate`` faults the pages in first, in one call per
        thread (a page the host may not touch then raises OSError instead of SIGBUS)."""
        ...


class NumpyHasher:
    """The definition itself (protocol.py), in bounded chunks."""

    name = "numpy"

    def pattern_acc(self, seed: int, offset: int, nwords: int, index: int = 0) -> int:
        acc = 0
        for lo in range(0, nwords, _CHUNK):
            n = min(_CHUNK, nwords - lo)
            words = protocol.pattern_words(seed, offset + lo * WORD, n * WORD)
            acc = protocol.hash_words(words, index + lo, acc)
        return acc

    def zero_acc(self, nwords: int, index: int = 0) -> int:
        acc = 0
        for lo in range(0, nwords, _CHUNK):
            n = min(_CHUNK, nwords - lo)
            acc = protocol.hash_words(np.zeros(n, dtype=np.uint64), index + lo, acc)
        return acc

    def memory_acc(self, addr: int, nwords: int, index: int = 0, populate: bool = False) -> int:
        if nwords == 0:
            return 0
        view = memoryview((ctypes.c_char * (nwords * WORD)).from_address(addr)).cast("B")
        return protocol.hash_words(np.frombuffer(view, dtype="<u8"), index)


class CompiledHasher:
    """``rangehash.c`` through ctypes (the call releases the GIL); ``threads`` per call."""

    def __init__(self, lib: ctypes.CDLL, threads: int) -> None:
        self._lib = lib
        self.threads = threads
        self.name = f"compiled ({threads} thread{'s' if threads > 1 else ''})"

    def _sum(self, kind: int, src: int | None, base: int, n: int, index: int, pop: bool) -> int:
        acc = ctypes.c_uint64()
        err = self._lib.qh_sum(
            kind, src, base & MASK64, n, index & MASK64, self.threads, int(pop),
            ctypes.byref(acc),
        )  # fmt: skip
        if err:
            raise OSError(err, f"faulting in guest memory at {src or 0:#x}: {os.strerror(err)}")
        return int(acc.value)

    def pattern_acc(self, seed: int, offset: int, nwords: int, index: int = 0) -> int:
        return self._sum(_PATTERN, None, seed * GOLDEN + offset, nwords, index, False)

    def zero_acc(self, nwords: int, index: int = 0) -> int:
        return self._sum(_ZERO, None, 0, nwords, index, False)

    def memory_acc(self, addr: int, nwords: int, index: int = 0, populate: bool = False) -> int:
        return self._sum(_MEMORY, addr, 0, nwords, index, populate)


def _threads() -> int:
    try:
        return max(1, min(8, len(os.sched_getaffinity(0))))
    except OSError:
        return 1


#: Held while a caller builds the helper: the hashes run in worker threads, and concurrent
#: runs (``run -j``) would otherwise compile it side by side; a thread that missed the cache
#: meanwhile finds the built object and only loads it again (the same dlopen handle).
_HASHER_LOCK = threading.Lock()


@functools.cache
def hasher() -> Hasher:
    """The compiled helper when it builds and loads here, else numpy (logged once, with why)."""
    with _HASHER_LOCK:
        return _make_hasher()


def _make_hasher() -> Hasher:
    if os.environ.get(ENV, "").lower() in ("numpy", "0"):
        return NumpyHasher()
    loaded = load()
    if loaded.lib is None:
        log.info("range hashes through numpy: %s", loaded.reason)
        return NumpyHasher()
    return CompiledHasher(loaded.lib, _threads())


def _check(offset: int, size: int) -> None:
    if offset % WORD or size % WORD:
        raise ValueError(f"offset {offset:#x} and size {size:#x} must be multiples of {WORD}")


@functools.lru_cache(maxsize=1024)
def pattern_hash(seed: int, offset: int, size: int) -> int:
    """:func:`qmpgmem.guest.protocol.pattern_hash`, at the helper's speed; remembered, as a
    scenario checks the same range again (a verify, then the host's read of it)."""
    _check(offset, size)
    return finish_hash(hasher().pattern_acc(seed, offset, size // WORD), size // WORD)


@functools.lru_cache(maxsize=1024)
def zero_hash(size: int) -> int:
    """:func:`qmpgmem.guest.protocol.zero_hash`, at the helper's speed; remembered."""
    _check(0, size)
    return finish_hash(hasher().zero_acc(size // WORD), size // WORD)


def hash_address(addr: int, size: int, populate: bool = False) -> int:
    """The range hash of ``size`` bytes mapped at ``addr`` in this process, read in place.

    ``populate``: fault the pages in first (MADV_POPULATE_READ), so a page the host may not
    touch (private guest_memfd) is an OSError, not a SIGBUS. It costs about as much as the
    hash again on pages already mapped, so only where such pages can exist.

    :raise OSError: ``populate`` and the kernel refused to fault a page in (EFAULT).
    """
    _check(0, size)
    return finish_hash(hasher().memory_acc(addr, size // WORD, 0, populate), size // WORD)


def hash_buffer(data: bytes | bytearray | memoryview | np.ndarray) -> int:
    """:func:`qmpgmem.guest.protocol.hash_bytes` of a buffer, without copying it."""
    words = np.frombuffer(data, dtype="<u8") if not isinstance(data, np.ndarray) else data
    if len(words) == 0:
        return finish_hash(0, 0)
    words = np.ascontiguousarray(words, dtype="<u8")
    return finish_hash(hasher().memory_acc(words.ctypes.data, len(words)), len(words))
