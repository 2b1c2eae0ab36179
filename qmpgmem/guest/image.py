"""Locate or build the micro guest: the 64 KiB ROM (microvm ``-bios``) and the PVH ELF
(``-kernel``), both from ``images/microguest``.

Where the sources are: package data at ``qmpgmem/data/microguest`` — in a checkout a symlink
to ``images/microguest``, in an installed wheel a copy of the same files — so an installed
qmpgmem builds its guest without a checkout; ``$QMPGMEM_MICROGUEST_SRC`` overrides it.

Why build on demand: the images are a few kilobytes of freestanding C and assembly that the
host's own gcc/ld/objcopy turn out in about a second, so nothing binary lives in the
repository. Why a cache keyed by a digest of the sources: a changed source is a new directory,
so a stale image is never used, and two processes building at once cannot corrupt each other
— each builds a private snapshot of the sources in a temporary directory and the finished
outputs are renamed into place in one step; whoever loses the race uses the winner's files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Final, Literal

from qmpgmem.cachedir import user_cache
from qmpgmem.errors import SetupError

__all__ = ["ImageKind", "cache_root", "guest_image", "image_sources_digest", "source_dir"]

ImageKind = Literal["rom", "pvh"]

#: What `make` leaves in its BUILD directory, by kind.
OUTPUTS: Final[dict[str, str]] = {"rom": "microguest.rom", "pvh": "microguest.elf"}
ROM_SIZE: Final = 64 * 1024
#: The tools the Makefile runs.
TOOLS: Final = ("make", "gcc", "ld", "objcopy")
#: Override for the source directory (by default the package data, see source_dir()).
SOURCE_ENV: Final = "QMPGMEM_MICROGUEST_SRC"
#: The sources as package data; a symlink to images/microguest in a checkout.
PACKAGED_SOURCES: Final = Path(__file__).resolve().parents[1] / "data" / "microguest"
BUILD_TIMEOUT: Final = 300.0

_SOURCE_SUFFIXES: Final = frozenset({".c", ".h", ".S", ".ld"})
_SOURCE_NAMES: Final = frozenset({"Makefile"})


def source_dir() -> Path:
    """The micro guest's sources: ``$QMPGMEM_MICROGUEST_SRC``, else the package data
    (symlinks resolved: images/microguest in a checkout)."""
    override = os.environ.get(SOURCE_ENV)
    path = Path(override) if override else PACKAGED_SOURCES.resolve()
    if not (path / "Makefile").is_file():
        where = f"{SOURCE_ENV} names" if override else "this qmpgmem installation has"
        raise SetupError(
            f"the micro guest sources are not at {path} (no Makefile; {where} no sources); "
            f"set {SOURCE_ENV} to the images/microguest directory of a qmpgmem checkout"
        )
    return path


def cache_root() -> Path:
    """Where built images are kept: ``$XDG_CACHE_HOME/qmpgmem/microguest`` (~/.cache)."""
    return user_cache("microguest")


def _source_files(src: Path) -> dict[str, bytes]:
    """Relative path -> content of every file the build reads (build/ output excluded)."""
    files: dict[str, bytes] = {}
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel.parts[0] == "build" or any(p.startswith(".") for p in rel.parts):
            continue
        if path.is_file() and (path.suffix in _SOURCE_SUFFIXES or path.name in _SOURCE_NAMES):
            files[rel.as_posix()] = path.read_bytes()
    return files


def _signature(src: Path) -> tuple[tuple[str, int, int, int], ...]:
    """Name, inode, size and mtime of every file the build reads: when none of them moved,
    the digest of the last call stands (a start of the kvm engine asks each time)."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(src):
        rel_dir = os.path.relpath(dirpath, src)
        dirnames[:] = sorted(
            d for d in dirnames if not d.startswith(".") and (rel_dir != "." or d != "build")
        )
        for name in sorted(filenames):
            if name.startswith(".") or not (
                os.path.splitext(name)[1] in _SOURCE_SUFFIXES or name in _SOURCE_NAMES
            ):
                continue
            st = os.stat(os.path.join(dirpath, name))
            entries.append((os.path.join(rel_dir, name), st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(entries)


#: source directory -> (its signature, its digest) at the last look
_DIGESTS: dict[Path, tuple[tuple[tuple[str, int, int, int], ...], str]] = {}


def _digest(files: dict[str, bytes]) -> str:
    h = hashlib.sha256()
    for rel, data in sorted(files.items()):
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return h.hexdigest()


def image_sources_digest(src: Path | None = None) -> str:
    """SHA-256 over the micro guest's sources (names and contents): the cache key."""
    return _digest(_source_files(src or source_dir()))


def _complete(directory: Path) -> bool:
    rom = directory / OUTPUTS["rom"]
    return (
        rom.is_file() and rom.stat().st_size == ROM_SIZE and (directory / OUTPUTS["pvh"]).is_file()
    )


def _check_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise SetupError(
            "building the micro guest needs "
            + ", ".join(TOOLS)
            + "; not found on PATH: "
            + ", ".join(missing)
            + " (Debian: apt-get install gcc binutils make)"
        )


def _build(files: dict[str, bytes], workdir: Path) -> Path:
    """Write the sources under ``workdir/src``, run make, return the output directory."""
    src, out = workdir / "src", workdir / "out"
    for rel, data in files.items():
        target = src / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    argv = ["make", "-C", str(src), f"BUILD={out}"]
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BUILD_TIMEOUT,
            env={**os.environ, "LC_ALL": "C"},
        )
    except subprocess.TimeoutExpired as exc:
        raise SetupError(f"building the micro guest took longer than {BUILD_TIMEOUT:g} s") from exc
    except OSError as exc:
        raise SetupError(f"could not run make for the micro guest: {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join(proc.stdout.strip().splitlines()[-40:])
        raise SetupError(
            f"building the micro guest failed ({' '.join(argv)} exited {proc.returncode}):\n{tail}"
        )
    if not _complete(out):
        raise SetupError(
            f"make for the micro guest succeeded but {out} lacks a {ROM_SIZE}-byte "
            f"{OUTPUTS['rom']} or {OUTPUTS['pvh']}:\n{proc.stdout.strip()}"
        )
    return out


def _publish(out: Path, final: Path) -> None:
    """Rename the finished build into place; a complete copy already there wins."""
    try:
        os.rename(out, final)  # atomic; fails when the directory exists and is not empty
    except OSError:
        if _complete(final):
            return
        shutil.rmtree(final, ignore_errors=True)  # a leftover without both outputs
        os.rename(out, final)


def _workdir(root: Path, digest: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".build-{digest[:12]}-", dir=root))


def guest_image(kind: ImageKind, *, cache: Path | None = None) -> Path:
    """The built image of ``kind`` ("rom" or "pvh"), building it first when needed.

    :raise SetupError: the sources are missing, a build tool is missing, or the build failed
        (the message carries make's and the compiler's output).
    """
    if kind not in OUTPUTS:
        raise ValueError(
            f"unknown micro guest image kind {kind!r}; expected one of {sorted(OUTPUTS)}"
        )
    src = source_dir()
    signature = _signature(src)
    known = _DIGESTS.get(src)
    files: dict[str, bytes] | None = None
    if known is not None and known[0] == signature:
        digest = known[1]
    else:
        files = _source_files(src)
        digest = _digest(files)
        _DIGESTS[src] = (signature, digest)
    root = cache or cache_root()
    final = root / digest
    if not _complete(final):
        if files is None:
            files = _source_files(src)
        _check_tools()
        try:
            workdir = _workdir(root, digest)
        except OSError as exc:
            if cache is not None:
                raise SetupError(
                    f"cannot create the micro guest cache under {root}: {exc}"
                ) from exc
            # A read-only home (the lab's L1 sees the host's read-only): build privately.
            root = Path(tempfile.gettempdir()) / "qmpgmem-microguest"
            final = root / digest
            try:
                workdir = _workdir(root, digest)
            except OSError as exc2:
                raise SetupError(
                    f"cannot create the micro guest cache under {root}: {exc2}"
                ) from exc
        try:
            out = _build(files, workdir)
            _publish(out, final)
        except OSError as exc:
            raise SetupError(f"cannot store the micro guest in {final}: {exc}") from exc
        finally:
            with contextlib.suppress(OSError):
                shutil.rmtree(workdir)
    return final / OUTPUTS[kind]
