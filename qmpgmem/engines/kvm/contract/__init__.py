"""The guest_memfd kernel contract as named checks against the running kernel.

Every check carries the upstream expectation and where it comes from (the kernel's selftests
tools/testing/selftests/kvm/guest_memfd_test.c and set_memory_region_test.c,
Documentation/virt/kvm/api.rst, and where those give no errno the code that decides it:
virt/kvm/guest_memfd.c, virt/kvm/kvm_main.c). One module per contract area, each reading
like the selftest section it mirrors:

* :mod:`.create`     — KVM_CREATE_GUEST_MEMFD, its capabilities, VM types
* :mod:`.fileops`    — read/write, stat, resizing
* :mod:`.mmap`       — mapping the file, faults
* :mod:`.fallocate`  — allocation and PUNCH_HOLE
* :mod:`.binding`    — memslots bound to a guest_memfd, the file's lifetime
* :mod:`.guest`      — what a vCPU sees of a guest_memfd slot
* :mod:`.memslot`    — read-only memslots (a store, a descriptor's accessed bit)
* :mod:`.attributes` — memory attributes, MEMORY_FAULT exits, the hypercall exit
* :mod:`.numa`       — NUMA policy and huge pages on a mapping

:mod:`.core` holds outcomes, the registry and the helpers, :mod:`.runner` runs them.
docs/kernel-contract.md lists the checks; ``python -m qmpgmem.engines.kvm.contract`` runs them.
"""

from __future__ import annotations

# the area modules register their checks in this order (the order of CHECKS and of a report)
# isort: off
from qmpgmem.engines.kvm.contract import create, fileops, mmap, fallocate  # noqa: F401
from qmpgmem.engines.kvm.contract import binding, guest, memslot, attributes, numa  # noqa: F401

# isort: on
from qmpgmem.engines.kvm.contract.core import (
    CHECKS,
    Check,
    CheckResult,
    Env,
    Mismatch,
    Outcome,
    Skip,
    check,
    expect_errno,
    expect_ok,
    kernel_before,
    on_emulated_cpu,
)
from qmpgmem.engines.kvm.contract.runner import main, run_checks

__all__ = [
    "CHECKS",
    "Check",
    "CheckResult",
    "Env",
    "Mismatch",
    "Outcome",
    "Skip",
    "check",
    "expect_errno",
    "expect_ok",
    "kernel_before",
    "main",
    "on_emulated_cpu",
    "run_checks",
]
