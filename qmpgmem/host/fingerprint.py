"""The host fingerprint every report carries: who ran it where, with what.

Why one builder: ``run``, ``probe``, ``kernel-contract`` and the lab's reports must describe a
host the same way, so two reports can be compared field by field (the same kernel? the same
QEMU package? the same OVMF?). Everything here is cheap and read once per process: no QEMU is
started (versions come from ``--version`` unless the caller already asked QMP), and ``dpkg`` is
asked about all paths in one call, its answers cached.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import socket
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from qmpgmem import __version__, hostinfo
from qmpgmem.host.cpu import cpu_kind
from qmpgmem.host.firmware import find_firmware
from qmpgmem.report.host import FirmwareImage, QemuBinary
from qmpgmem.report.result import HostInfo

__all__ = ["cpu_model", "debian_packages", "host_fingerprint", "qemu_build"]

#: path -> (package, version) as dpkg knows it, or None when no package owns the path
_PACKAGES: dict[str, tuple[str, str | None] | None] = {}


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The first CPU's "model name" (x86), or "" when /proc/cpuinfo does not say."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return ""
    m = re.search(r"^model name\s*:\s*(.*)$", text, re.MULTILINE)
    return m.group(1).strip() if m else ""


@functools.cache
def _version_output(binary: str) -> str:
    try:
        return subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def qemu_build(binary: str) -> tuple[str | None, str | None]:
    """(version, build package string) from ``binary --version``: "QEMU emulator version
    10.0.2 (Debian 1:10.0.2+ds-2)" gives ("10.0.2", "Debian 1:10.0.2+ds-2")."""
    m = re.search(r"version (\d+\.\d+\.\d+)(?:\s*\(([^)\n]*)\))?", _version_output(binary))
    if not m:
        return None, None
    return m.group(1), (m.group(2) or "").strip() or None


def _dpkg_owners(paths: Sequence[str]) -> dict[str, str]:
    """path -> owning package from one ``dpkg -S`` call (diversions and unknown paths left
    out; "pkg:amd64, other" gives "pkg")."""
    if not paths or shutil.which("dpkg") is None:
        return {}
    try:
        out = subprocess.run(
            ["dpkg", "-S", *paths], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    owners: dict[str, str] = {}
    for line in out.splitlines():
        if line.startswith("diversion ") or ": " not in line:
            continue
        packages, path = line.split(": ", 1)
        owners.setdefault(path.strip(), packages.split(",")[0].strip().split(":")[0])
    return owners


def _dpkg_versions(packages: Iterable[str]) -> dict[str, str]:
    names = sorted(set(packages))
    if not names or shutil.which("dpkg-query") is None:
        return {}
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Package}\t${Version}\n", *names],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    versions: dict[str, str] = {}
    for line in out.splitlines():
        name, _, version = line.partition("\t")
        if version:
            versions[name] = version
    return versions


def debian_packages(paths: Iterable[str]) -> dict[str, tuple[str, str | None] | None]:
    """Each path -> (package, version) of the Debian package that installed it, or None when
    dpkg does not know the path (or there is no dpkg). A path dpkg does not list is tried
    resolved too (``/bin`` vs ``/usr/bin`` on a merged /usr). Cached per process."""
    wanted = list(dict.fromkeys(paths))
    todo = [p for p in wanted if p not in _PACKAGES]
    if todo:
        # absolute, because dpkg -S takes anything else for a pattern
        candidates = {
            p: list(dict.fromkeys([os.path.abspath(p), os.path.realpath(p)])) for p in todo
        }
        owners = _dpkg_owners(sorted({c for cs in candidates.values() for c in cs}))
        versions = _dpkg_versions(owners.values())
        for path, cs in candidates.items():
            owner = next((owners[c] for c in cs if c in owners), None)
            _PACKAGES[path] = None if owner is None else (owner, versions.get(owner))
    return {p: _PACKAGES[p] for p in wanted}


def _firmware(binaries: Sequence[str]) -> list[FirmwareImage]:
    """Every image find_firmware sees, under each binary's prefix and the system's, once."""
    seen: dict[tuple[str, str], None] = {}
    for binary in [*binaries, None]:
        for name, path in find_firmware(binary).items():
            seen.setdefault((name, path), None)
    packages = debian_packages(path for _, path in seen)
    images = []
    for name, path in seen:
        pkg = packages[path]
        images.append(
            FirmwareImage(
                name=name,
                path=path,
                package=pkg[0] if pkg else None,
                package_version=pkg[1] if pkg else None,
            )
        )
    return images


def host_fingerprint(
    *,
    engine: str = "",
    qemu_binaries: Sequence[str] | None = None,
    qemu_versions: Mapping[str, str | None] | None = None,
    kernel_release: str | None = None,
    kvm_backend: str | None = None,
    cpu: str | None = None,
    cpu_model_name: str | None = None,
    firmware: bool = True,
) -> HostInfo:
    """This host's fingerprint. Each argument left None is read here: ``qemu_binaries``
    defaults to qemu-system-x86_64 on PATH, ``qemu_versions`` (what QMP said, when the caller
    probed) to ``--version``; ``kvm_backend`` is "none" without a KVM module."""
    if qemu_binaries is None:
        found = hostinfo.find_qemu()
        qemu_binaries = [found] if found else []
    versions = dict(qemu_versions or {})
    # a bare name ("qemu-system-x86_64", as the probe takes it) is the binary on PATH
    paths = {b: b if os.sep in b else shutil.which(b) or b for b in qemu_binaries}
    packages = debian_packages(paths.values())
    qemus: list[QemuBinary] = []
    for binary, path in paths.items():
        version, build = qemu_build(path)
        pkg = packages[path]
        qemus.append(
            QemuBinary(
                path=path,
                version=versions.get(binary) or version,
                build=build,
                package=pkg[0] if pkg else None,
                package_version=pkg[1] if pkg else None,
            )
        )
    return HostInfo(
        hostname=socket.gethostname(),
        cpu_model=cpu_model() if cpu_model_name is None else cpu_model_name,
        cpu=str(cpu_kind()) if cpu is None else cpu,
        kernel_release=hostinfo.kernel_release() if kernel_release is None else kernel_release,
        kvm_backend=(hostinfo.kvm_backend() if kvm_backend is None else kvm_backend) or "none",
        qemu_binary=qemus[0].path if qemus else None,
        qemu_version=qemus[0].version if qemus else None,
        qemu=qemus,
        firmware=_firmware(qemu_binaries) if firmware else [],
        qmpgmem_version=__version__,
        python_version=platform.python_version(),
        engine=engine,
    )
