"""What this host can run: KVM capabilities, the KVM backend, QEMU binaries, firmware.

The runner calls :func:`probe_host` once (it is cached per process) and
:func:`evaluate_requirements` per scenario; a non-None answer is the skip reason.
"""

from qmpgmem.host.facts import Fact, HostFacts, KvmFacts, QemuFacts
from qmpgmem.host.probe import probe_host
from qmpgmem.host.requirements import (
    KNOWN_REQUIREMENTS,
    check_requirement_syntax,
    evaluate_requirement,
    evaluate_requirements,
)

__all__ = [
    "KNOWN_REQUIREMENTS",
    "Fact",
    "HostFacts",
    "KvmFacts",
    "QemuFacts",
    "check_requirement_syntax",
    "evaluate_requirement",
    "evaluate_requirements",
    "probe_host",
]
