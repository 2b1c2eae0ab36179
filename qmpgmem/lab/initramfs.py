"""The lab's initramfs: Debian's busybox-static and qmpgmem's /init, as a gzipped newc cpio.

Why this small: L1 needs no root filesystem of its own — /init mounts the host's root over
9p and runs the job in a chroot of it, so the job uses the host's own Python, venv and QEMU.
Why written here rather than with cpio(1): the archive is five entries, and writing it in
Python keeps the build free of one more host tool and makes its contents testable.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Final

from qmpgmem.errors import SetupError
from qmpgmem.lab.debian import private_apt, unpack_deb
from qmpgmem.lab.paths import lab_cache

__all__ = ["CpioEntry", "build_initramfs", "busybox", "init_script", "read_cpio", "write_cpio"]

BUSYBOX_PACKAGE: Final = "busybox-static"
#: Directories /init expects before it mounts anything.
DIRECTORIES: Final = ("bin", "sbin", "dev", "proc", "sys", "host", "tmp")
_TRAILER: Final = "TRAILER!!!"
_S_IFDIR: Final = 0o040000
_S_IFREG: Final = 0o100000


@dataclass(frozen=True)
class CpioEntry:
    name: str
    mode: int  # including the file type bits
    data: bytes = b""


def init_script() -> bytes:
    """The /init shell script shipped with qmpgmem (qmpgmem/lab/init.sh)."""
    return resources.files("qmpgmem.lab").joinpath("init.sh").read_bytes()


def busybox() -> Path:
    """busybox from Debian's busybox-static, downloaded and unpacked once into the cache."""
    root = lab_cache() / "busybox"
    found = sorted(root.glob("*/bin/busybox"))
    if found:
        return found[-1]
    apt = private_apt("system")
    apt.update()
    version = apt.candidate(BUSYBOX_PACKAGE)
    if version is None:
        raise SetupError(f"Debian offers no {BUSYBOX_PACKAGE} for the lab's initramfs")
    deb = apt.download(BUSYBOX_PACKAGE, version, lab_cache() / "downloads")
    dest = root / version.replace(":", "_")
    unpack_deb(deb, dest)
    binary = dest / "bin/busybox"
    if not binary.is_file():
        raise SetupError(f"{deb.name} has no bin/busybox")
    return binary


def _header(ino: int, entry: CpioEntry) -> bytes:
    name = entry.name.encode() + b"\0"
    fields = (
        ino, entry.mode, 0, 0, 1 if entry.mode & _S_IFREG else 2, 0, len(entry.data),
        0, 0, 0, 0, len(name), 0,
    )  # fmt: skip
    head = b"070701" + b"".join(f"{v:08X}".encode() for v in fields)
    raw = head + name
    return raw + b"\0" * (-len(raw) % 4)


def write_cpio(entries: Iterable[CpioEntry]) -> bytes:
    """A newc ("070701") archive of ``entries``, as the kernel's initramfs unpacker reads it."""
    out = bytearray()
    for ino, entry in enumerate([*entries, CpioEntry(_TRAILER, 0)], start=1):
        out += _header(ino, entry)
        out += entry.data + b"\0" * (-len(entry.data) % 4)
    return bytes(out)


def read_cpio(archive: bytes) -> list[CpioEntry]:
    """The entries of a newc archive (the trailer left out); for tests and for checking."""
    entries: list[CpioEntry] = []
    pos = 0
    while True:
        if archive[pos : pos + 6] != b"070701":
            raise ValueError(f"not a newc cpio header at offset {pos}")
        fields = [int(archive[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = archive[name_start : name_start + namesize - 1].decode()
        data_start = name_start + namesize
        data_start += -data_start % 4
        data = archive[data_start : data_start + size]
        pos = data_start + size
        pos += -pos % 4
        if name == _TRAILER:
            return entries
        entries.append(CpioEntry(name, mode, data))


def initramfs_entries(busybox_binary: bytes, init: bytes) -> list[CpioEntry]:
    entries = [CpioEntry(d, _S_IFDIR | 0o755) for d in DIRECTORIES]
    entries.append(CpioEntry("bin/busybox", _S_IFREG | 0o755, busybox_binary))
    entries.append(CpioEntry("init", _S_IFREG | 0o755, init))
    return entries


def build_initramfs() -> Path:
    """The initramfs for the current busybox and /init, cached by their digest."""
    bb = busybox().read_bytes()
    init = init_script()
    digest = hashlib.sha256(bb + b"\0" + init).hexdigest()[:16]
    path = lab_cache() / "initramfs" / f"initramfs-{digest}.cpio.gz"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(gzip.compress(write_cpio(initramfs_entries(bb, init)), compresslevel=6))
    os.replace(tmp, path)
    return path
