"""Running the registered checks against /dev/kvm."""

from __future__ import annotations

import sys as _sys

from qmpgmem.engines.kvm.backend import kvm_backend
from qmpgmem.engines.kvm.contract.core import CHECKS, CheckResult, Env, Outcome
from qmpgmem.engines.kvm.objects import Kvm


def run_checks(names: list[str] | None = None, backend: str | None = None) -> list[CheckResult]:
    """Run the named checks (all by default) against /dev/kvm."""
    from qmpgmem.host.cpu import cpu_kind

    chosen = [c for c in CHECKS if names is None or c.name in names]
    with Kvm() as kvm:
        env = Env(kvm, backend or kvm_backend(), cpu_emulated=cpu_kind().emulated)
        return [c.run(env) for c in chosen]


def main() -> int:
    results = run_checks(_sys.argv[1:] or None)
    for result in results:
        print(result)
    return 1 if any(r.outcome is Outcome.FAILED for r in results) else 0
