"""The strict verdict: a run passes the gate only when nothing skipped or fell back unexpectedly.

Why a gate on top of statuses: a host whose /dev/kvm broke still "passes" with skips allowed
(every KVM scenario skips, QEMU's auto accelerator quietly runs TCG). Under ``--strict`` a skip
must be in the host class's baseline (:mod:`qmpgmem.report.expected_skips`) with a matching
reason, no result may have run on TCG because KVM was unusable, and no passed result may
carry a warning (a run that checked nothing says so in ``warnings``). A ``flaky`` result
(``run --repeat N``: its runs ended differently) fails the gate as any result that did not
pass does, and the verdict counts it apart, since a flake asks for another fix than a
failure. The verdict is one sentence that leads with the cause when KVM itself is the cause.
"""

from __future__ import annotations

from collections.abc import Sequence

from qmpgmem.report.expected_skips import ExpectedSkips
from qmpgmem.report.result import Gate, GateViolation, ScenarioResult, Status

__all__ = ["judge"]

#: How a passed result with warnings (e.g. nothing was checked) starts its violation.
WARNED = "passed with a warning: "


def _violation(result: ScenarioResult, baseline: ExpectedSkips) -> str | None:
    if result.status is Status.FLAKY:
        return f"flaky: {result.reason}"
    if result.status is Status.SKIPPED and baseline.expected(result) is None:
        near = baseline.about(result)
        if near is not None:
            return f"skip reason changed: {baseline.source}:{near.line} expects {near.reason!r}"
        if not baseline.source:
            return "skip not expected (no --expect-skips file)"
        return f"skip not in {baseline.source}"
    if result.accel_note:
        return f"ran on TCG, not KVM ({result.accel_note})"
    if result.status is Status.PASSED and result.warnings:
        return WARNED + "; ".join(result.warnings)
    return None


def judge(
    results: Sequence[ScenarioResult], baseline: ExpectedSkips, kvm_unusable: str = ""
) -> Gate:
    """The strict verdict over ``results`` (failures count as always; this adds skips/TCG)."""
    violations = [
        GateViolation(scenario=r.scenario, engine=r.engine, status=r.status, why=why)
        for r in results
        if (why := _violation(r, baseline)) is not None
    ]
    flaky = sum(1 for r in results if r.status is Status.FLAKY)
    failed = sum(1 for r in results if not r.status.ok) - flaky
    unused = [f"{e.scenario} [{e.engine}] (line {e.line})" for e in baseline.unused(results)]
    skips = sum(1 for v in violations if v.status is Status.SKIPPED)
    warned = sum(1 for v in violations if v.why.startswith(WARNED))
    tcg = len(violations) - skips - warned - flaky
    parts = []
    if failed:
        parts.append(f"{failed} did not pass")
    if flaky:
        parts.append(f"{flaky} flaky (their runs ended differently)")
    if skips:
        parts.append(f"{skips} unexpected skip{'s' if skips != 1 else ''} ({baseline.describe()})")
    if tcg:
        parts.append(f"{tcg} ran on TCG instead of KVM")
    if warned:
        parts.append(f"{warned} passed with a warning")
    passed = not parts
    if passed:
        verdict = (
            f"strict: passed — every skip is expected by {baseline.source}"
            if any(r.status is Status.SKIPPED for r in results)
            else "strict: passed — nothing skipped"
        )
    elif kvm_unusable and (skips or tcg):
        verdict = f"strict: failed — KVM is unusable here: {kvm_unusable} ({', '.join(parts)})"
    else:
        verdict = f"strict: failed — {', '.join(parts)}"
    return Gate(
        passed=passed,
        verdict=verdict,
        baseline=baseline.describe(),
        violations=violations,
        unused_expected_skips=unused,
    )
