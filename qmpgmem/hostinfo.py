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
from pathlib import Path

KVM_BACKENDS = ("kvm_intel", "kvm_amd", "kvm_pvm")


def kvm_backend(sys_module: Path = Path("/sys/module")) -> str:
    """Which module serves /dev/kvm: kvm_intel, kvm_amd, kvm_pvm, or "" when none is loaded."""
    for name in KVM_BACKENDS:
        if (sys_module / name).is_dir():
            return name
    return ""


def kvm_usable(dev: str = "/dev/kvm") -> bool:
    return os.path.exists(dev) and os.access(dev, os.R_OK | os.W_OK)


def find_qemu(explicit: str | None = None) -> str | None:
    if explicit:
        return explicit if os.sep in explicit else shutil.which(explicit)
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
