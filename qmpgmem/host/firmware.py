"""Where the firmware images live on this host: the OVMF builds a confidential guest boots
from, and qboot, the firmware that boots the micro guest's PVH ELF on microvm.

Why a table of paths and not QEMU's firmware descriptors: the flavours need specific builds
(AMD SEV/SNP's ``OVMF.amdsev.fd``, Intel TDX's ``OVMF.inteltdx.fd``), which distributions ship
at fixed paths (Debian/Ubuntu ``ovmf`` — in sid split into ``ovmf-generic``, ``ovmf-amdsev``,
``ovmf-inteltdx`` — under /usr/share/ovmf, the plain
pflash builds under /usr/share/OVMF; Fedora/CentOS under /usr/share/edk2/ovmf). A QEMU unpacked
into a private prefix (tools/fetch-qemu-sid.sh) brings its own share/ tree, searched first.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

__all__ = ["FIRMWARE_NAMES", "FIRMWARE_PATHS", "find_firmware"]

#: name -> candidate paths below a root ("/" or a private prefix), most specific first.
FIRMWARE_PATHS: Final[dict[str, tuple[str, ...]]] = {
    # a unified CODE+VARS image, usable with -bios
    "ovmf": ("usr/share/ovmf/OVMF.fd", "usr/share/edk2/ovmf/OVMF.fd"),
    "ovmf-code": ("usr/share/OVMF/OVMF_CODE.fd", "usr/share/edk2/ovmf/OVMF_CODE.fd"),
    "ovmf-code-4m": ("usr/share/OVMF/OVMF_CODE_4M.fd",),
    "ovmf-amdsev": ("usr/share/ovmf/OVMF.amdsev.fd", "usr/share/edk2/ovmf/OVMF.amdsev.fd"),
    "ovmf-inteltdx": (
        "usr/share/ovmf/OVMF.inteltdx.fd",
        "usr/share/ovmf/OVMF.inteltdx.ms.fd",  # Debian sid's ovmf-inteltdx ships only this
        "usr/share/edk2/ovmf/OVMF.inteltdx.fd",
    ),
    # QEMU's own microvm firmware. Debian's bios-microvm.bin, microvm's default there, is a
    # SeaBIOS build instead, which spends ~2.8 s of each boot on a kvm_pvm host clearing
    # 0xc0000-0xfffff a byte at a time at CPL0 (emulated); qboot boots in ~0.06 s.
    "qboot": ("usr/share/qemu/qboot.rom",),
}
#: The names ``firmware:<name>`` can require, in report order.
FIRMWARE_NAMES: Final = tuple(FIRMWARE_PATHS)


def _roots(binary: str | None) -> list[Path]:
    """Private prefixes around ``binary`` (PREFIX/usr/bin/qemu or PREFIX/wrapper), then "/"."""
    roots: list[Path] = []
    if binary:
        resolved = Path(binary).resolve()
        for ancestor in list(resolved.parents)[:3]:
            if ancestor != Path("/") and (ancestor / "usr/share").is_dir():
                roots.append(ancestor)
    roots.append(Path("/"))
    return roots


def find_firmware(binary: str | None = None) -> dict[str, str]:
    """Name -> path of each firmware image that exists (absent names are left out)."""
    found: dict[str, str] = {}
    for root in _roots(binary):
        for name, candidates in FIRMWARE_PATHS.items():
            if name in found:
                continue
            for rel in candidates:
                path = root / rel
                if path.is_file() and os.access(path, os.R_OK):
                    found[name] = str(path)
                    break
    return {name: found[name] for name in FIRMWARE_NAMES if name in found}
