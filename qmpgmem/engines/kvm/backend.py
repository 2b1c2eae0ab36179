"""Which KVM implementation serves /dev/kvm: kvm_intel, kvm_amd or kvm_pvm.

Why the engine needs to know: the generic KVM code is the same everywhere, but how guest
instructions run is not. On kvm_pvm (software virtualization) a guest ``vmcall``/``vmmcall``
never returns (measured; docs/guest-protocol.md), so a step that would send the guest into
a hypercall must be refused up front instead of hanging the vCPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: Checked in this order: kvm_pvm can be loaded next to a hardware module.
BACKENDS: Final = ("kvm_pvm", "kvm_intel", "kvm_amd")

#: Backends on which a guest hypercall (KVM_HC_MAP_GPA_RANGE) does not return to the guest.
HYPERCALL_NEVER_RETURNS: Final = frozenset({"kvm_pvm"})


def kvm_backend(sys_module: Path = Path("/sys/module")) -> str:
    """The loaded backend module's name, or ``"unknown"``."""
    for name in BACKENDS:
        if (sys_module / name).is_dir():
            return name
    return "unknown"
