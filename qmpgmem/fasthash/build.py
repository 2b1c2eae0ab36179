"""Compile the range-hash helper (``rangehash.c``) once per source and load it with ctypes.

Why compiled at first use and not shipped: the helper is one small C file the host's gcc (the
one the micro guest needs anyway) turns into a shared object in a fraction of a second, so
nothing binary lives in the repository or the wheel. Why a cache keyed by a digest of the
source and the flags: a changed source is a new file, never a stale one; two processes
building at once each compile into a private temporary name and rename it into place, so the
loser simply uses the winner's object. Without a compiler, :func:`load` says why and the
callers fall back to numpy (:mod:`qmpgmem.fasthash`).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qmpgmem.cachedir import user_cache

__all__ = ["ABI_VERSION", "CFLAGS", "Loaded", "cache_root", "load", "source_path"]

#: The source as package data, next to this module (the wheel carries it too).
SOURCE: Final = Path(__file__).resolve().with_name("rangehash.c")
#: What qh_abi() of an object built from this source answers.
ABI_VERSION: Final = 1
#: Baseline ISA only: rangehash.c picks AVX2/AVX-512 clones at load time (see its header).
CFLAGS: Final = ("-O3", "-fPIC", "-shared", "-pthread", "-Wall", "-Wextra")
COMPILER_ENV: Final = "CC"
BUILD_TIMEOUT: Final = 120.0


@dataclass(frozen=True)
class Loaded:
    """The loaded helper, or why there is none (``lib`` None, ``reason`` says why)."""

    lib: ctypes.CDLL | None
    reason: str
    path: Path | None = None


def source_path() -> Path:
    return SOURCE


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/qmpgmem/fasthash`` (~/.cache), where built objects are kept."""
    return user_cache("fasthash")


def _digest(source: bytes, compiler: str) -> str:
    h = hashlib.sha256(source)
    h.update("\0".join((compiler, *CFLAGS, os.uname().machine)).encode())
    return h.hexdigest()[:32]


def _compile(compiler: str, source: Path, target: Path) -> None:
    """Build ``target`` through a private temporary name, renamed into place at the end."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        proc = subprocess.run(
            [compiler, *CFLAGS, "-o", tmp, str(source)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT,
            env={**os.environ, "LC_ALL": "C"},
        )
        if proc.returncode != 0:
            tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
            raise OSError(f"{compiler} exited {proc.returncode}: {tail}")
        os.rename(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _open(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.qh_abi.restype = ctypes.c_int
    lib.qh_abi.argtypes = []
    if lib.qh_abi() != ABI_VERSION:
        raise OSError(f"{path} answers ABI {lib.qh_abi()}, expected {ABI_VERSION}")
    u64 = ctypes.c_uint64
    lib.qh_sum.restype = ctypes.c_int
    lib.qh_sum.argtypes = [
        ctypes.c_int,  # kind
        ctypes.c_void_p,  # src
        u64,  # base
        u64,  # n words
        u64,  # index of the first word
        ctypes.c_int,  # threads
        ctypes.c_int,  # populate
        ctypes.POINTER(u64),  # acc out
    ]
    return lib


def _private_dir(root: Path) -> None:
    """A directory in a shared place (/tmp) is used only when it is ours alone (a shared
    object loaded from a directory others can write to would run their code)."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    st = root.lstat()
    if not root.is_dir() or root.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise OSError(f"{root} is not a private directory of this user")


def load(cache: Path | None = None) -> Loaded:
    """The helper built from :data:`SOURCE` (compiled first when the cache lacks it).

    Never raises for a missing compiler or a failed build: the result carries the reason, and
    the caller decides (qmpgmem.fasthash falls back to numpy and says so).
    """
    compiler = os.environ.get(COMPILER_ENV) or "gcc"
    if shutil.which(compiler) is None:
        return Loaded(None, f"no C compiler ({compiler}) on PATH")
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        return Loaded(None, f"the helper's source {SOURCE} is unreadable: {exc}")
    name = f"rangehash-{_digest(source, compiler)}.so"
    roots = [cache] if cache is not None else [cache_root()]
    if cache is None:  # a read-only home (the lab's L1): build privately
        roots.append(Path(tempfile.gettempdir()) / f"qmpgmem-fasthash-{os.getuid()}")
    errors = []
    for root in roots:
        target = root / name
        try:
            if root != cache and root != cache_root():
                _private_dir(root)
            if not target.is_file():
                _compile(compiler, SOURCE, target)
            return Loaded(_open(target), f"compiled helper {target}", target)
        except (OSError, subprocess.SubprocessError) as exc:
            errors.append(f"{root}: {exc}")
    return Loaded(None, "building the hash helper failed: " + "; ".join(errors))
