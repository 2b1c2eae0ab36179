"""kernel-contract by area: checks run per VM type, tables of expectations carry their errno,
and the deviations recorded for this host stay narrow."""

from __future__ import annotations

import errno

import pytest

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.contract import CHECKS, Check, Env, Outcome, kernel_before, run_checks
from qmpgmem.engines.kvm.contract.create import BAD_SIZES
from qmpgmem.engines.kvm.contract.fallocate import MODES, RANGES
from qmpgmem.engines.kvm.contract.fileops import FILE_OPS
from qmpgmem.engines.kvm.contract.runner import offered_vm_types
from qmpgmem.engines.kvm.objects import Kvm
from qmpgmem.hostinfo import kernel_release

from .helpers import needs_kvm


def _by_name(name: str) -> Check:
    return next(c for c in CHECKS if c.name == name)


def test_a_per_vm_type_result_is_named_after_its_type() -> None:
    chk = _by_name("create.flags")
    assert chk.per_vm_type
    assert chk.result_name(0) == "create.flags"
    assert chk.result_name(abi.VmType.SW_PROTECTED) == "create.flags[sw_protected]"
    assert chk.result_name(9) == "create.flags[type 9]"
    # the guest checks mirror test_guest_memfd_guest, which runs on a default VM only
    assert not _by_name("guest.gmem_only_slot").per_vm_type


@needs_kvm
def test_per_vm_type_checks_run_once_for_each_offered_type() -> None:
    with Kvm() as kvm:
        types = offered_vm_types(kvm)
    assert 0 in types
    results = run_checks(["create.size", "guest.punch_hole"])
    names = [r.name for r in results]
    assert names == [_by_name("create.size").result_name(t) for t in types] + ["guest.punch_hole"]


def test_the_tables_name_the_errno_upstream_gives() -> None:
    assert [e for *_, e in FILE_OPS] == [errno.EINVAL] * 2 + [errno.ESPIPE] * 4
    assert {(w, e) for w, _, _, _, e in RANGES if e} == {
        ("punch at an unaligned offset", errno.EINVAL),
        ("allocate at the end", errno.EINVAL),
        ("allocate past the end", errno.EINVAL),
        ("allocate across the end", errno.EINVAL),
        ("punch with an unaligned length", errno.EINVAL),
    }
    assert {w: e for w, *_, e in MODES}["PUNCH_HOLE without KEEP_SIZE"] == errno.EOPNOTSUPP
    sizes = [s for group in BAD_SIZES.values() for s in group]
    assert {0, 4097, 8191, 1 << 63, (1 << 64) - 4096} <= set(sizes)


def test_every_check_names_an_upstream_source() -> None:
    for c in CHECKS:
        assert any(
            s in c.source for s in ("selftests/kvm", "api.rst", "virt/kvm/", "arch/x86/kvm")
        ), c.name


@needs_kvm
@pytest.mark.parametrize("backend", ["kvm_pvm", "kvm_intel", "kvm_amd"])
def test_offset_overflow_is_a_deviation_only_of_kernels_before_the_fix(backend: str) -> None:
    """The signed-offset bug is keyed by release: the same behaviour on a kernel that claims
    7.2 or later fails, whichever backend it is."""
    chk = _by_name("bind.offset_overflow")
    assert set(chk.deviations) == {kernel_before("7.2")}
    with Kvm() as kvm:
        here = chk.run(Env(kvm, backend, kernel_release=kernel_release()))
        fixed = chk.run(Env(kvm, backend, kernel_release="7.2.13-amd64"))
    if here.outcome is Outcome.SKIPPED:
        pytest.skip(f"the check cannot run on this host: {here.detail}")
    if here.outcome is Outcome.PASSED and not here.detail:
        assert fixed.outcome is Outcome.PASSED  # a kernel with the fix: nothing to show
        return
    assert here.outcome is Outcome.DEVIATION and "kernels before 7.2" in here.detail
    assert fixed.outcome is Outcome.FAILED and "succeeded" in fixed.detail
