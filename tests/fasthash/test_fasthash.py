"""The compiled range hash against the numpy definition (qmpgmem.guest.protocol).

Why random ranges: the helper splits a range over threads on 4 KiB boundaries and runs
vector clones with scalar tails; a seam in the wrong place changes the sum only for some
lengths, offsets and start indices, so each case draws all of them, and thread counts from 1
to more than the words allow.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from qmpgmem import fasthash
from qmpgmem.fasthash import CompiledHasher, NumpyHasher
from qmpgmem.fasthash.build import CFLAGS, load, source_path
from qmpgmem.guest import protocol as p

M = (1 << 64) - 1


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    loaded = load()
    if loaded.lib is None:
        pytest.skip(f"no compiled helper here: {loaded.reason}")
    return loaded.lib


def _cases(n: int, seed: int) -> list[tuple[int, int, int, int]]:
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        nwords = rnd.choice([0, 1, 3, 511, 512, 513, 4097, rnd.randrange(1, 300_000)])
        out.append((rnd.randrange(1 << 64), rnd.randrange(1 << 40) * 8, nwords, rnd.randrange(M)))
    return out


@pytest.mark.parametrize("threads", [1, 2, 3, 8])
def test_pattern_and_zero_sums_equal_the_definition(lib: ctypes.CDLL, threads: int) -> None:
    fast, ref = CompiledHasher(lib, threads), NumpyHasher()
    for seed, offset, nwords, index in _cases(40, threads):
        assert fast.pattern_acc(seed, offset, nwords, index) == ref.pattern_acc(
            seed, offset, nwords, index
        ), (seed, offset, nwords, index)
        assert fast.zero_acc(nwords, index) == ref.zero_acc(nwords, index), (nwords, index)


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_memory_sums_equal_the_definition(lib: ctypes.CDLL, threads: int) -> None:
    fast, ref = CompiledHasher(lib, threads), NumpyHasher()
    rng = np.random.default_rng(threads)
    data = rng.integers(0, 1 << 63, size=600_000, dtype=np.uint64) * np.uint64(3)
    for _, _, nwords, index in _cases(30, 100 + threads):
        lo = int(rng.integers(0, len(data) - min(nwords, len(data)) + 1))
        n = min(nwords, len(data) - lo)
        addr = data.ctypes.data + lo * 8
        want = ref.memory_acc(addr, n, index)
        assert fast.memory_acc(addr, n, index) == want, (lo, n, index)
        assert fast.memory_acc(addr, n, index, populate=True) == want


def test_whole_hashes_match_protocol_across_numpy_chunks() -> None:
    """The module functions (whichever hasher is active) give protocol.py's answers."""
    size = (p._CHUNK_WORDS + 5) * 8
    assert fasthash.pattern_hash(9, 0x1008, size) == p.pattern_hash(9, 0x1008, size)
    assert fasthash.zero_hash(size) == p.zero_hash(size)
    data = p.pattern_bytes(5, 0x40, 0x10000)
    assert fasthash.hash_buffer(data) == p.hash_bytes(data)
    assert fasthash.hash_buffer(b"") == p.hash_bytes(b"") == 0
    assert fasthash.pattern_hash(1, 0, 0x1000) == 0x04CA406755062E72  # the pinned answer


def test_hash_address_reads_a_shared_mapping_in_place() -> None:
    """Memory written after the mapping was made is what gets hashed (no stale copy)."""
    with mmap.mmap(-1, 1 << 20) as m:
        addr = int(np.frombuffer(m, dtype=np.uint8).ctypes.data)
        assert fasthash.hash_address(addr, 1 << 20) == p.zero_hash(1 << 20)
        m[4096 : 4096 + 64] = p.pattern_bytes(3, 4096, 64)
        assert fasthash.hash_address(addr, 1 << 20) == p.hash_bytes(bytes(m))
        assert fasthash.hash_address(addr, 1 << 20) != p.zero_hash(1 << 20)


def test_populate_reports_a_page_the_host_cannot_read(lib: ctypes.CDLL) -> None:
    """A mapping past the end of its file: MADV_POPULATE_READ gives an errno, not SIGBUS."""
    fd = os.memfd_create("fasthash-test")
    try:
        os.ftruncate(fd, 3 * 4096)
        with mmap.mmap(fd, 3 * 4096, prot=mmap.PROT_READ) as m:
            os.ftruncate(fd, 4096)  # pages 1 and 2 of the mapping now lie beyond the file
            base = int(np.frombuffer(m, dtype=np.uint8).ctypes.data)
            with pytest.raises(OSError):
                CompiledHasher(lib, 2).memory_acc(base, 3 * 512, 0, populate=True)
            assert CompiledHasher(lib, 1).memory_acc(base, 512, 0, True) == (
                NumpyHasher().zero_acc(512)
            )
    finally:
        os.close(fd)


def test_numpy_is_forced_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(fasthash.ENV, "numpy")
    fasthash.hasher.cache_clear()
    try:
        assert fasthash.hasher().name == "numpy"
        assert fasthash.pattern_hash(1, 0, 0x1000) == 0x04CA406755062E72
    finally:
        monkeypatch.delenv(fasthash.ENV)
        fasthash.hasher.cache_clear()


def test_without_a_compiler_load_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CC", "qmpgmem-no-such-compiler")
    loaded = load(tmp_path)
    assert loaded.lib is None and "qmpgmem-no-such-compiler" in loaded.reason


def test_build_caches_by_source_digest(tmp_path: Path) -> None:
    first = load(tmp_path)
    if first.lib is None:
        pytest.skip(first.reason)
    assert first.path is not None and first.path.parent == tmp_path
    mtime = first.path.stat().st_mtime_ns
    again = load(tmp_path)
    assert again.path == first.path and first.path.stat().st_mtime_ns == mtime  # not rebuilt
    assert [f.name for f in tmp_path.iterdir()] == [first.path.name]  # no temporaries left


def test_the_helper_compiles_without_a_warning(tmp_path: Path) -> None:
    """The runtime build does not stop at warnings (a newer gcc must not cost the helper),
    so they are caught here instead."""
    if shutil.which("gcc") is None:
        pytest.skip("no gcc")
    argv = ["gcc", *CFLAGS, "-Werror", "-o", str(tmp_path / "h.so"), str(source_path())]
    proc = subprocess.run(argv, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
