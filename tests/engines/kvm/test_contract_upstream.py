"""The map of selftests to contract checks, and the verdict comparison built on it."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

from qmpgmem.engines.kvm.contract import CHECKS
from qmpgmem.engines.kvm.contract.upstream import (
    BEYOND_UPSTREAM,
    COVERED_BY,
    agreement,
    selftest_of,
)

NAMES = [c.name for c in CHECKS]
DOC = Path(__file__).resolve().parents[3] / "docs" / "kernel-contract.md"


def test_every_check_is_covered_by_one_selftest_or_said_to_go_beyond() -> None:
    for name in NAMES:
        covering = [b for b, ps in COVERED_BY.items() if any(fnmatch.fnmatch(name, p) for p in ps)]
        if name in BEYOND_UPSTREAM:
            assert not covering, f"{name} is both covered ({covering}) and beyond upstream"
        else:
            assert len(covering) == 1, f"{name}: covered by {covering or 'no selftest'}"


def test_every_pattern_and_exception_names_a_check() -> None:
    for binary, patterns in COVERED_BY.items():
        for p in patterns:
            assert any(fnmatch.fnmatch(n, p) for n in NAMES), f"{binary}: {p} matches nothing"
    assert set(BEYOND_UPSTREAM) <= set(NAMES)


def test_the_docs_table_names_every_covered_check() -> None:
    table = DOC.read_text().split("## Upstream test functions and the checks that cover them")[1]
    table = table.split("\n## ")[0]
    missing = [n for n in NAMES if selftest_of(n) and f"`{n}`" not in table]
    assert not missing, f"docs/kernel-contract.md's upstream table lacks {missing}"


def test_a_result_name_maps_without_its_vm_type() -> None:
    assert selftest_of("bind.flags[sw_protected]") == "set_memory_region_test"
    assert selftest_of("memslot.readonly_store") is None


@pytest.mark.parametrize(
    ("checks", "selftests", "disagree"),
    [
        # agreeing: all passed; a deviation beside a passed selftest; a skipped selftest
        ([("bind.flags", "passed")], [("set_memory_region_test", "passed")], False),
        ([("bind.same_range_twice", "deviation")], [("set_memory_region_test", "passed")], False),
        ([("bind.flags", "failed")], [("set_memory_region_test", "skipped")], False),
        # a failed check where its selftest passed
        (
            [("bind.flags", "passed"), ("bind.bad_fd[sw_protected]", "failed")],
            [("set_memory_region_test", "passed")],
            True,
        ),
        # a failed selftest whose checks all passed
        ([("numa.mbind", "passed")], [("guest_memfd_test", "failed")], True),
        # the worst of several runs of one binary counts
        (
            [("caps.exit_hypercall", "passed")],
            [("private_mem_conversions_test", "passed"), ("private_mem_conversions_test", "error")],
            True,
        ),
        # a check another selftest covers does not count
        ([("numa.mbind", "failed")], [("set_memory_region_test", "passed")], False),
    ],
)
def test_agreement(
    checks: list[tuple[str, str]], selftests: list[tuple[str, str]], disagree: bool
) -> None:
    found = agreement(checks, selftests)
    assert bool(found) is disagree, found
    if found:
        assert found[0].selftest == selftests[0][0] and str(found[0]).startswith(selftests[0][0])
