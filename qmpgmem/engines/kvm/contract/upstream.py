"""Which kernel selftest checks the behaviour of which contract checks, and whether the two
agree on one kernel.

Why as data: a contract result seen only in the lab (an emulated CPU) is held against the
kernel's own selftest on the same kernel before it is called a KVM behaviour. The map says
which selftest binary covers which checks (docs/kernel-contract.md's table, by upstream test
function), so the lab tier can compare verdicts mechanically instead of by reading.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

__all__ = ["BEYOND_UPSTREAM", "COVERED_BY", "Disagreement", "agreement", "selftest_of"]

#: selftest binary → the checks (fnmatch patterns of check names without ``[vm_type]``) that
#: assert behaviours its test functions assert
COVERED_BY: Final[Mapping[str, tuple[str, ...]]] = {
    "guest_memfd_test": (
        "create.flags",
        "create.size",
        "create.multiple",
        "caps.default_vm_gmem_flags",
        "caps.init_shared_implies_mmap",
        "vm_types.create",
        "file.*",
        "mmap.*",
        "fallocate.ranges",
        "fallocate.invalid_punch",
        "bind.offset_overflow",
        "guest.upstream_gmem_guest*",
        "guest.gmem_only_slot*",
        "guest.punch_hole",
        "numa.*",
        "hugepage.collapse",
    ),
    "private_mem_kvm_exits_test": (
        "attributes.memory_fault_exit",
        "attributes.memory_fault_slot_deleted_while_running",
        "guest.gmem_closed_under_slot",
    ),
    "private_mem_conversions_test": (
        "caps.exit_hypercall",
        "attributes.private_roundtrip",
        "attributes.range_checks",
        "attributes.private_unsupported",
        "fallocate.punch_patterns",
        "fallocate.modes",
    ),
    "set_memory_region_test": (
        "bind.not_a_guest_memfd",
        "bind.other_vm",
        "bind.offset_alignment",
        "bind.past_end",
        "bind.bad_fd",
        "bind.gpa_overlap",
        "bind.same_range_twice",
        "bind.flags",
        "bind.memslot_flags",
    ),
}

#: checks no selftest exercises (kvm_main.c or api.rst promises only), with why they exist
BEYOND_UPSTREAM: Final[Mapping[str, str]] = {
    "create.reserved_ignored": "api.rst's reserved fields; no selftest sets them",
    "lifetime.vm_closed_first": "the file outlives its VM; guest_memfd.c's release path",
    "bind.immutable": "kvm_set_memory_region refuses changes to a guest_memfd slot",
    "memslot.readonly_store": "KVM_MEM_READONLY stores exit as MMIO (api.rst)",
    "memslot.readonly_descriptor": "an implicit accessed-bit write to a read-only slot",
}


def _base(name: str) -> str:
    """``bind.flags[sw_protected]`` → ``bind.flags``."""
    return name.split("[", 1)[0]


def selftest_of(check: str) -> str | None:
    """The selftest binary covering ``check`` (a result name), None when none does."""
    base = _base(check)
    for binary, patterns in COVERED_BY.items():
        if any(fnmatch.fnmatchcase(base, p) for p in patterns):
            return binary
    return None


@dataclass(frozen=True)
class Disagreement:
    """A selftest and the checks it covers that judge one kernel differently."""

    selftest: str
    selftest_status: str
    #: the covered checks' results that disagree: name → outcome
    checks: dict[str, str]

    def __str__(self) -> str:
        shown = ", ".join(f"{n} {o}" for n, o in sorted(self.checks.items())) or "no check"
        return f"{self.selftest} {self.selftest_status}, but: {shown}"


def agreement(
    checks: Iterable[tuple[str, str]], selftests: Iterable[tuple[str, str]]
) -> list[Disagreement]:
    """Where the contract and the selftests disagree on one kernel.

    ``checks``: (result name, outcome) of a kernel-contract run; ``selftests``: (binary
    base name, status) of a ``lab selftests`` run (several runs of one binary: the worst
    counts). A passed selftest disagrees with any covered check that failed; a failed one
    with covered checks that all passed (a deviation is a recorded difference, so it agrees
    with either). A skipped selftest judges nothing.
    """
    status: dict[str, str] = {}
    for binary, st in selftests:
        if status.get(binary) != "failed":
            status[binary] = "failed" if st in ("failed", "error", "timeout") else st
    by_test: dict[str, dict[str, str]] = {}
    for name, outcome in checks:
        covering = selftest_of(name)
        if covering is not None:
            by_test.setdefault(covering, {})[name] = outcome
    found = []
    for binary, st in status.items():
        covered = by_test.get(binary, {})
        if st == "passed":
            bad = {n: o for n, o in covered.items() if o == "failed"}
            if bad:
                found.append(Disagreement(binary, st, bad))
        elif st == "failed":
            judged = {n: o for n, o in covered.items() if o != "skipped"}
            if judged and all(o == "passed" for o in judged.values()):
                found.append(Disagreement(binary, st, judged))
    return found
