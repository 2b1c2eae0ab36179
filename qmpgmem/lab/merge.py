"""The run reports of one ``lab run`` per lab kernel, merged into one report.

Why: ``lab run --kernel 7.2 --kernel 6.12`` boots one L1 per kernel, and each inner run
writes its own report of the same scenarios. Merged, every result carries the kernel it ran
on (``kernel``, and in its id: ``conversion-back-to-back [kvm, kernel 6.12.118]``), so
compare and aggregate keep the kernels apart as they keep QEMU binaries apart, and one JSON
and one JUnit file hold them all. The host is the first L1's fingerprint with every kernel
release named; the strict gate passes only when each kernel's did.
"""

from __future__ import annotations

from collections.abc import Sequence

from qmpgmem.report.envelope import RunDocument
from qmpgmem.report.result import Gate, RunReport, ScenarioResult, Summary, result_id

__all__ = ["kernel_results", "merge_kernel_reports"]


def kernel_results(doc: RunDocument, release: str | None = None) -> list[ScenarioResult]:
    """``doc``'s results, each marked with the kernel it ran on (``release``, default the
    L1 kernel the report names) and that kernel in its id."""
    kernel = release or doc.host.kernel_release
    return [
        r.model_copy(
            update={
                "kernel": kernel,
                "id": result_id(r.scenario, r.engine, r.qemu, r.qemu_version, kernel),
            }
        )
        for r in doc.results
    ]


def _gate(docs: Sequence[RunDocument]) -> Gate | None:
    gates = [(d.host.kernel_release, d.gate) for d in docs if d.gate is not None]
    if not gates:
        return None
    return Gate(
        passed=all(g.passed for _, g in gates),
        verdict="; ".join(f"kernel {k}: {g.verdict}" for k, g in gates),
        baseline=gates[0][1].baseline,
        violations=[v for _, g in gates for v in g.violations],
        unused_expected_skips=[u for _, g in gates for u in g.unused_expected_skips],
    )


def merge_kernel_reports(docs: Sequence[RunDocument], missing: str | None = None) -> RunReport:
    """One report of the per-kernel ``docs`` (in the order the kernels ran).

    ``missing``: why the reports are not all there (an L1 that failed); the merged report
    is then incomplete, as an interrupted run's is.

    :raise ValueError: no report to merge
    """
    if not docs:
        raise ValueError("no lab run report to merge")
    results = [r for d in docs for r in kernel_results(d)]
    releases = list(dict.fromkeys(d.host.kernel_release for d in docs))
    host = docs[0].host.model_copy(update={"kernel_release": ", ".join(releases)})
    interrupted = next((d.interrupted for d in docs if not d.complete), None) or missing
    return RunReport(
        summary=Summary.of(results),
        results=results,
        host=host,
        complete=all(d.complete for d in docs) and missing is None,
        interrupted=interrupted,
        gate=_gate(docs),
        allow_unsafe=any(d.allow_unsafe for d in docs),
    )
