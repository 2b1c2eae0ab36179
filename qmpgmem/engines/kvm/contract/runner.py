"""Running the registered checks against /dev/kvm."""

from __future__ import annotations

import dataclasses
import sys as _sys

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.backend import kvm_backend
from qmpgmem.engines.kvm.contract.core import CHECKS, CheckResult, Env, Outcome
from qmpgmem.engines.kvm.objects import Kvm


def offered_vm_types(kvm: Kvm) -> list[int]:
    """The VM types KVM_CAP_VM_TYPES lists; the default type where the capability is absent
    (guest_memfd_test.c: main)."""
    mask = kvm.check_extension(abi.Cap.VM_TYPES) or 1
    return [t for t in range(64) if mask & (1 << t)]


def run_checks(names: list[str] | None = None, backend: str | None = None) -> list[CheckResult]:
    """Run the named checks (all by default) against /dev/kvm; a per-VM-type check once for
    each type KVM_CAP_VM_TYPES offers."""
    from qmpgmem.host.cpu import cpu_kind
    from qmpgmem.hostinfo import kernel_release

    chosen = [c for c in CHECKS if names is None or c.name in names]
    with Kvm() as kvm:
        env = Env(
            kvm,
            backend or kvm_backend(),
            cpu_emulated=cpu_kind().emulated,
            kernel_release=kernel_release(),
        )
        types = offered_vm_types(kvm)
        results = []
        for c in chosen:
            for vm_type in types if c.per_vm_type else [0]:
                results.append(c.run(dataclasses.replace(env, vm_type=vm_type)))
        return results


def main() -> int:
    results = run_checks(_sys.argv[1:] or None)
    for result in results:
        print(result)
    return 1 if any(r.outcome is Outcome.FAILED for r in results) else 0
