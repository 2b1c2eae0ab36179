"""One entry point for everything the host offers: the kernel's KVM and each QEMU binary.

Why it is async: the QEMU side is a QMP conversation (one short-lived QEMU per binary, probed
concurrently); the kernel side is a handful of ioctls, run in a worker thread so an event
loop never blocks on /dev/kvm. Both halves are cached per process, so the runner may call
this for every scenario.
"""

from __future__ import annotations

import asyncio
import shutil

from qmpgmem.host.facts import HostFacts
from qmpgmem.host.kernel import probe_kvm
from qmpgmem.host.qemu import DEFAULT_QEMU, probe_qemu

__all__ = ["default_qemu_binaries", "probe_host"]


def default_qemu_binaries() -> list[str]:
    """``qemu-system-x86_64`` from PATH when there is one, else nothing."""
    return [DEFAULT_QEMU] if shutil.which(DEFAULT_QEMU) else []


async def probe_host(qemu_binaries: list[str] | None = None) -> HostFacts:
    """Probe KVM and each QEMU binary (None: the default binary, if installed).

    :raise SetupError: a QEMU binary that was asked for is missing or does not answer.
    """
    binaries = default_qemu_binaries() if qemu_binaries is None else list(qemu_binaries)
    kvm, qemu = await asyncio.gather(
        asyncio.to_thread(probe_kvm),
        asyncio.gather(*(probe_qemu(b) for b in dict.fromkeys(binaries))),
    )
    return HostFacts(kvm=kvm, qemu=list(qemu))
