"""The parts of a report's host fingerprint: each QEMU binary and firmware image, with the
Debian package that installed it.

Why apart from result.py: :class:`qmpgmem.report.result.HostInfo` is made of these, and the
fingerprint builder (qmpgmem/host/fingerprint.py) fills them; neither needs the run models.
"""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["FirmwareImage", "QemuBinary"]


class QemuBinary(BaseModel):
    """One QEMU binary a run could use, in the order of preference."""

    path: str
    #: the version QEMU reports (e.g. "10.0.2"); None when it did not run
    version: str | None = None
    #: the package string it was built with, from ``--version`` (e.g. "Debian 1:10.0.2+ds-2")
    build: str | None = None
    #: the Debian package that installed it (``dpkg -S``); None when dpkg does not know it
    package: str | None = None
    #: that package's version (``dpkg-query -W``), e.g. "1:10.0.2+ds-2+deb13u1~bpo12+1"
    package_version: str | None = None


class FirmwareImage(BaseModel):
    """One firmware image found (qmpgmem/host/firmware.py), e.g. name "ovmf-amdsev"."""

    name: str
    path: str
    package: str | None = None
    package_version: str | None = None
