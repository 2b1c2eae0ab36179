"""Each kernel-contract check runs for real; the result logic is tested on its own."""

from __future__ import annotations

import pytest

from qmpgmem.engines.kvm import contract
from qmpgmem.engines.kvm.backend import kvm_backend
from qmpgmem.engines.kvm.contract import CHECKS, Check, Env, Mismatch, Outcome, Skip
from qmpgmem.engines.kvm.objects import Kvm

from .helpers import needs_kvm


@needs_kvm
@pytest.mark.parametrize("chk", CHECKS, ids=[c.name for c in CHECKS])
def test_check_against_this_kernel(chk: Check) -> None:
    backend = kvm_backend()
    with Kvm() as kvm:
        result = chk.run(Env(kvm, backend))
    assert result.name == chk.name and result.backend == backend
    if result.outcome is Outcome.SKIPPED:
        assert result.detail, "a skip must say why"
        return
    if result.outcome is Outcome.DEVIATION:
        # only a deviation the check documents for this backend, and it names the backend
        assert backend in chk.deviations
        assert result.detail.startswith(f"{backend}: ")
        return
    assert result.outcome is Outcome.PASSED, result.detail


def test_checks_are_named_and_sourced() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    for c in CHECKS:
        assert c.expectation and c.source
        assert "." in c.name


def _run(body: object, deviations: dict[str, str] | None = None, backend: str = "kvm_x") -> object:
    chk = Check("t.x", "upstream says so", "api.rst", body, deviations or {})  # type: ignore[arg-type]
    return chk.run(Env(kvm=None, backend=backend))  # type: ignore[arg-type]


def _mismatch(env: Env) -> None:
    raise Mismatch("saw something else")


def _oserror(env: Env) -> None:
    raise FileNotFoundError(2, "gone")


def _skip(env: Env) -> None:
    raise Skip("no such feature")


def _ok(env: Env) -> None:
    pass


def test_mismatch_is_a_failure_unless_the_backend_deviation_is_known() -> None:
    r = _run(_mismatch)
    assert r.outcome is Outcome.FAILED and r.detail == "saw something else"  # type: ignore[attr-defined]
    r = _run(_mismatch, {"kvm_other": "why"})
    assert r.outcome is Outcome.FAILED  # type: ignore[attr-defined]
    r = _run(_mismatch, {"kvm_x": "measured reason"})
    assert r.outcome is Outcome.DEVIATION  # type: ignore[attr-defined]
    assert r.detail == "kvm_x: measured reason; observed: saw something else"  # type: ignore[attr-defined]


def test_unexpected_errors_fail_and_skips_keep_their_reason() -> None:
    r = _run(_oserror)
    assert r.outcome is Outcome.FAILED and "unexpected error" in r.detail  # type: ignore[attr-defined]
    r = _run(_skip)
    assert r.outcome is Outcome.SKIPPED and r.detail == "no such feature"  # type: ignore[attr-defined]


def test_a_pass_notes_a_deviation_that_did_not_show() -> None:
    r = _run(_ok, {"kvm_x": "reason"})
    assert r.outcome is Outcome.PASSED and "did not show" in r.detail  # type: ignore[attr-defined]
    assert _run(_ok).detail == ""  # type: ignore[attr-defined]


def test_expect_helpers() -> None:
    contract.expect_errno("x", lambda: (_ for _ in ()).throw(OSError(22, "inval")), 22)
    with pytest.raises(Mismatch, match="succeeded"):
        contract.expect_errno("x", lambda: None)
    with pytest.raises(Mismatch, match="EPERM, not EINVAL"):
        contract.expect_errno("x", lambda: (_ for _ in ()).throw(OSError(1, "perm")), 22)
    with pytest.raises(Mismatch, match="failed: ENOENT"):
        contract.expect_ok("x", lambda: (_ for _ in ()).throw(OSError(2, "noent")))
