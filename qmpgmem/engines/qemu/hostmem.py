"""The host's read of a QEMU guest's RAM in place: the RAM block's own pages, not a copy.

Why not ``pmemsave``: QEMU copies the range into a file that is then read back (~0.5 GiB/s
here); the pages themselves are a memfd, a file or shared memory that this process can map.
``x-query-ramblock`` names each RAM block (a scenario region's block is named by its memdev
id, the region id) with its host address in QEMU; ``/proc/PID/maps`` says what backs that
address. What reads the range, in order:

* ``backend file``: a ``file`` region's backing file, which the engine opened itself;
* ``map_files``: the mapping's file through ``/proc/PID/map_files/START-END`` (memfd, shared
  RAM; opening it needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE);
* ``QEMU's fd``: without that privilege, QEMU's own open fd of the same file;
* ``/proc/PID/mem``: a private mapping (``ram`` without ``share``) has no file to map; its
  pages are read through QEMU's memory file in chunks, each hashed as it arrives.

Only a shared mapping is read through its file: in a private one QEMU's writes live in its
own copy-on-write pages. Anything else (no such block, a range beyond it) returns None and
the engine falls back to ``pmemsave``. A file mapping stays mapped here for the engine's life
(:class:`QemuRam`): mapping and faulting in 256 MiB again for every read cost more than
hashing it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from qmpgmem import fasthash
from qmpgmem.guest.protocol import MASK64, WORD, finish_hash

__all__ = [
    "HostRead",
    "QemuRam",
    "RamBlock",
    "Vma",
    "find_vma",
    "parse_maps",
    "parse_ramblocks",
]

#: How much of a private mapping one pread of /proc/PID/mem brings in.
PROC_MEM_CHUNK: Final = 16 << 20

_HEX = r"0x[0-9a-fA-F]+"
_ROW = re.compile(rf"^\s*(\S+)\s+\d+\s+\S+\s+({_HEX})\s+({_HEX})\s+({_HEX})\s+({_HEX})\s+(\S+)")


@dataclass(frozen=True)
class HostRead:
    """A hash and the path that read the memory."""

    value: int
    via: str


@dataclass(frozen=True)
class RamBlock:
    """One row of ``x-query-ramblock``."""

    name: str
    offset: int  # ram_addr of the block
    used: int
    total: int
    hva: int  # where QEMU has the block's pages


@dataclass(frozen=True)
class Vma:
    """One line of ``/proc/PID/maps``."""

    start: int
    end: int
    perms: str
    pgoff: int
    dev: tuple[int, int]
    inode: int
    path: str

    @property
    def shared(self) -> bool:
        return self.perms[3:4] == "s"


def parse_ramblocks(text: str) -> list[RamBlock]:
    """The rows of ``x-query-ramblock``'s human-readable table (QEMU 6.2+)."""
    blocks = []
    for line in text.splitlines():
        m = _ROW.match(line)
        if m:
            name, off, used, total, hva = m.group(1), *(int(m.group(i), 16) for i in range(2, 6))
            blocks.append(RamBlock(name, off, used, total, hva))
    return blocks


def parse_maps(text: str) -> list[Vma]:
    vmas = []
    for line in text.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            continue
        lo, _, hi = parts[0].partition("-")
        major, _, minor = parts[3].partition(":")
        vmas.append(
            Vma(
                int(lo, 16),
                int(hi, 16),
                parts[1],
                int(parts[2], 16),
                (int(major, 16), int(minor, 16)),
                int(parts[4]),
                parts[5].strip() if len(parts) > 5 else "",
            )
        )
    return vmas


def find_vma(vmas: Iterable[Vma], addr: int, size: int) -> Vma | None:
    """The mapping that holds all of ``[addr, addr+size)``, if one does."""
    for vma in vmas:
        if vma.start <= addr and addr + size <= vma.end:
            return vma
    return None


def _same_file(fd: int, vma: Vma) -> bool:
    st = os.fstat(fd)
    return st.st_ino == vma.inode and (os.major(st.st_dev), os.minor(st.st_dev)) == vma.dev


def _qemu_fd(pid: int, vma: Vma) -> int | None:
    """QEMU's own open fd of the mapping's file, opened again here (same inode and device)."""
    with contextlib.suppress(OSError):
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                fd = os.open(f"/proc/{pid}/fd/{name}", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            if _same_file(fd, vma):
                return fd
            os.close(fd)
    return None


def _hash_proc_mem(pid: int, addr: int, size: int) -> int:
    """Read QEMU's pages at ``addr`` through /proc/PID/mem a chunk at a time, summing each."""
    hasher = fasthash.hasher()
    buf = bytearray(min(size, PROC_MEM_CHUNK))
    view = memoryview(buf)
    base = int(np.frombuffer(buf, dtype=np.uint8).ctypes.data)
    acc, done = 0, 0
    fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY | os.O_CLOEXEC)
    try:
        while done < size:
            n = min(PROC_MEM_CHUNK, size - done)
            got = os.preadv(fd, [view[:n]], addr + done)
            if got != n:
                raise OSError(f"/proc/{pid}/mem gave {got} of {n} bytes at {addr + done:#x}")
            acc += hasher.memory_acc(base, n // WORD, done // WORD)
            done += n
    finally:
        os.close(fd)
    return finish_hash(acc & MASK64, size // WORD)


class QemuRam:
    """Reads QEMU ``pid``'s RAM blocks in place; keeps each file mapping it made until
    :meth:`close`, so a second read of a region finds its pages already mapped here.

    ``own_fds``: files this process opened for QEMU (``file`` regions' backing files).
    """

    def __init__(self, pid: int, own_fds: Iterable[int] = ()) -> None:
        self.pid = pid
        self.own_fds = tuple(own_fds)
        self._maps: dict[Vma, tuple[mmap.mmap, int, str]] = {}
        #: held while a hash reads a mapping: close() waits for it (a hash whose step timed
        #: out still runs in its thread; unmapping under it would crash the process)
        self._busy = threading.Lock()

    def _open(self, vma: Vma) -> tuple[int, str] | None:
        """An fd of the mapping's file (the caller closes it), and the path's name."""
        for fd in self.own_fds:
            if _same_file(fd, vma):
                return os.dup(fd), "backend file"
        try:
            where = f"/proc/{self.pid}/map_files/{vma.start:x}-{vma.end:x}"
            return os.open(where, os.O_RDONLY | os.O_CLOEXEC), "map_files"
        except PermissionError:
            found = _qemu_fd(self.pid, vma)
            return (found, "QEMU's fd") if found is not None else None

    def _mapped(self, vma: Vma) -> tuple[int, str] | None:
        """Where this process sees the start of ``vma``'s pages, and the path's name."""
        if vma not in self._maps:
            opened = self._open(vma)
            if opened is None:
                return None
            fd, via = opened
            try:
                m = mmap.mmap(
                    fd, vma.end - vma.start, mmap.MAP_SHARED, mmap.PROT_READ, offset=vma.pgoff
                )
            finally:
                os.close(fd)
            view = np.frombuffer(m, dtype=np.uint8)
            base = int(view.ctypes.data)
            del view  # no buffer of the mapping may stay exported, or it cannot close
            self._maps[vma] = (m, base, via)
        _, base, via = self._maps[vma]
        return base, via

    def hash(self, blocks: list[RamBlock], block: str, offset: int, size: int) -> HostRead | None:
        """The hash of ``size`` bytes at ``offset`` of RAM block ``block``, and the path that
        read them; None when no path but pmemsave can (see the module docstring).

        :raise OSError: a path was found but reading through it failed.
        """
        with self._busy:
            return self._hash(blocks, block, offset, size)

    def _hash(self, blocks: list[RamBlock], block: str, offset: int, size: int) -> HostRead | None:
        rb = next((b for b in blocks if b.name == block), None)
        if rb is None or offset + size > rb.used or size % WORD:
            return None
        addr = rb.hva + offset
        vma = find_vma(parse_maps(Path(f"/proc/{self.pid}/maps").read_text()), addr, size)
        if vma is None:
            return None
        mapped = self._mapped(vma) if vma.shared and vma.path else None
        if mapped is None:
            return HostRead(_hash_proc_mem(self.pid, addr, size), "/proc/PID/mem")
        base, via = mapped
        return HostRead(fasthash.hash_address(base + addr - vma.start, size), via)

    def close(self) -> None:
        """Unmap everything, once no hash is reading (idempotent)."""
        with self._busy:
            maps, self._maps = self._maps, {}
            for m, _, _ in maps.values():
                m.close()
