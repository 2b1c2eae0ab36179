"""The few host facts every run needs, cheap to read: KVM backend, kernel, QEMU version.

Why apart from qmpgmem.host (the full probe): deciding accel and engine-level skips must not
need QEMU to be started, and the report's host block is filled even when the probe fails.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess

from qmpgmem.engines.kvm.backend import kvm_backend as engines_kvm_backend


def kvm_backend() -> str:
    """Which module serves /dev/kvm (kvm_intel, kvm_amd, kvm_pvm), or "" when none."""
    name = engines_kvm_backend()
    return "" if name == "unknown" else name


def kvm_unusable_reason(dev: str = "/dev/kvm") -> str | None:
    """One sentence on why ``dev`` cannot serve KVM here (missing, no access, not a KVM
    device), or None when it opens and answers KVM_GET_API_VERSION."""
    from qmpgmem.engines.kvm.objects import kvm_unusable_reason as check

    return check(dev)


def kvm_usable(dev: str = "/dev/kvm") -> bool:
    return kvm_unusable_reason(dev) is None


def find_qemu(explicit: str | None = None) -> str | None:
    """The binary to run: a path made absolute (QEMU starts in its run directory, where a
    relative ``--qemu build/…`` would name nothing), a bare name looked up on PATH."""
    if explicit:
        return os.path.abspath(explicit) if os.sep in explicit else shutil.which(explicit)
    return shutil.which("qemu-system-x86_64")


@functools.cache
def qemu_version(binary: str) -> str | None:
    """The version QEMU prints (e.g. "10.0.2"); None when it cannot run."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except OSError:
        return None
    m = re.search(r"version (\d+\.\d+\.\d+)", out)
    return m.group(1) if m else None


def kernel_release() -> str:
    return platform.release()
