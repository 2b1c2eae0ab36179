"""Two reports of one kind, compared: what broke, what was fixed, what changed on the host.

Why: a QEMU or kernel CI compares a candidate build's run against the last good one, and a
platform team a host after an image change against the host before it. A difference is a
:class:`Change`; the ones that make ``qmpgmem compare`` exit 1 are regressions:

- ``run``: per scenario x engine x QEMU binary (the binary by its place in the host's
  ``qemu`` list, ``qemu[0]``, so a candidate build at another path still lines up): a new
  failure (passed or skipped before, failed, error or timeout now), a new skip (ran before,
  skips now: coverage lost), a result that is missing now, a duration beyond the noise
  threshold (slower by at least ``ratio`` *and* by ``seconds``), a report that is incomplete
  now, a strict gate that failed now, a result that is flaky now (``run --repeat``: its
  runs ended differently) that neither failed nor was flaky before. Fixes (failed or flaky
  before, passed now), vanished skips, changed skip reasons, other status changes, results
  added, and a faster duration are reported and do not fail.
- ``kernel-contract``: per check, the same rules over passed / deviation / skipped / failed.
- ``probe`` and ``bench``: :mod:`qmpgmem.report.compare_facts`.

Host fingerprint differences are listed for every kind and never fail by themselves: a
candidate build differs from the last good one on purpose.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import Final, Literal

from pydantic import BaseModel, Field

from qmpgmem.report.envelope import ContractDocument, RunDocument
from qmpgmem.report.hosts import host_diff, host_id
from qmpgmem.report.inputs import LoadedReport
from qmpgmem.report.result import HostInfo, ScenarioResult, Status

__all__ = [
    "Change",
    "ChangeKind",
    "CompareError",
    "Comparison",
    "Merged",
    "ReportRef",
    "Thresholds",
    "binary_slot",
    "compare_reports",
    "merge_results",
    "regressions_first",
    "result_slot",
]


class ChangeKind(StrEnum):
    NEW_FAILURE = "new-failure"
    NEW_SKIP = "new-skip"
    MISSING = "missing"
    SLOWER = "slower"
    INCOMPLETE = "incomplete"
    GATE = "gate"
    FLAKY = "flaky"  # run --repeat: the runs of a result ended differently
    LOST = "lost"  # probe: a capability the host had
    FIXED = "fixed"
    VANISHED_SKIP = "vanished-skip"
    SKIP_REASON = "skip-reason"
    STATUS = "status"
    ADDED = "added"
    FASTER = "faster"
    GAINED = "gained"  # probe
    CHANGED = "changed"  # probe: a value that is neither lost nor gained
    HOST = "host"


class Thresholds(BaseModel):
    """Noise threshold of durations: a change counts only beyond both bounds."""

    #: slower by at least this factor (new / base)
    ratio: float = 1.5
    #: and by at least this many seconds
    seconds: float = 0.25


class Change(BaseModel):
    """One difference between the two reports."""

    kind: ChangeKind
    #: what changed: "basic-smoke [qemu, qemu[0]]", a check name, a fact, a host field
    subject: str
    base: str | None = None
    new: str | None = None
    detail: str = ""
    regression: bool


class ReportRef(BaseModel):
    path: str
    kind: str
    created: str | None = None
    host: str | None = None  # the host id (report/hosts.py)


class Comparison(BaseModel):
    """What ``qmpgmem compare --json`` writes."""

    schema_version: Literal[1] = 1
    kind: Literal["compare"] = "compare"
    compared: str  # the kind of both inputs
    base: ReportRef
    new: ReportRef
    thresholds: Thresholds
    #: subjects (results, checks, facts, figures) present in both and unchanged
    unchanged: int
    regressions: int
    changes: list[Change] = Field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.regressions == 0


class CompareError(ValueError):
    """The two inputs cannot be compared (different kinds)."""


_BAD: Final = frozenset({Status.FAILED, Status.ERROR, Status.TIMEOUT})
_SKIP: Final = frozenset({Status.SKIPPED, Status.WOULD_SKIP})
#: worst first: the status a key gets when a report holds it several times (--repeat)
_SEVERITY: Final = (
    Status.ERROR,
    Status.TIMEOUT,
    Status.FAILED,
    Status.FLAKY,
    Status.SKIPPED,
    Status.WOULD_SKIP,
    Status.WOULD_RUN,
    Status.PASSED,
)


def binary_slot(result: ScenarioResult, host: HostInfo) -> str:
    """The QEMU binary of a result by its place in the host's preference list (``qemu[1]``),
    its path when the list does not hold it, "" for the kvm engine."""
    if not result.qemu:
        return ""
    for i, q in enumerate(host.qemu):
        if q.path == result.qemu:
            return f"qemu[{i}]"
    return result.qemu


def result_slot(result: ScenarioResult, host: HostInfo) -> str:
    """What tells results of one scenario and engine apart in a report: the binary's slot
    (:func:`binary_slot`) and, for the lab's kernels, ``kernel 7.2.13``."""
    slot = binary_slot(result, host)
    return f"{slot} kernel {result.kernel}".strip() if result.kernel else slot


def _binary_version(result: ScenarioResult, host: HostInfo) -> str | None:
    return next((q.version for q in host.qemu if result.qemu and q.path == result.qemu), None)


class Merged(BaseModel):
    """The results of one key (several with ``--repeat``): worst status, median time."""

    status: Status
    reason: str
    duration_s: float | None  # median of the passed repetitions
    runs: int
    #: the binary's slot and version as shown: "qemu[0] 10.0.2" ("" for the kvm engine)
    binary: str
    binary_version: str | None


def merge_results(results: Sequence[ScenarioResult], host: HostInfo) -> Merged:
    """One key's results as one: the worst status (and its reason), the median duration of
    the passed ones."""
    worst = min(results, key=lambda r: _SEVERITY.index(r.status))
    passed = [r.duration_s for r in results if r.status is Status.PASSED]
    version = _binary_version(worst, host)
    slot = binary_slot(worst, host)
    kernel = f" kernel {worst.kernel}" if worst.kernel else ""
    return Merged(
        status=worst.status,
        reason=worst.reason,
        duration_s=statistics.median(passed) if passed else None,
        runs=sum(r.repeats.runs if r.repeats else 1 for r in results),
        binary=((f"{slot} {version}" if slot and version else slot) + kernel).strip(),
        binary_version=version,
    )


def _by_key(doc: RunDocument) -> dict[tuple[str, str, str], Merged]:
    groups: dict[tuple[str, str, str], list[ScenarioResult]] = {}
    for r in doc.results:
        groups.setdefault((r.scenario, r.engine, result_slot(r, doc.host)), []).append(r)
    return {key: merge_results(rs, doc.host) for key, rs in groups.items()}


def _subject(key: tuple[str, str, str], label: str) -> str:
    scenario, engine, _ = key
    return f"{scenario} [{engine}, {label}]" if label else f"{scenario} [{engine}]"


def _status_change(
    subject: str, b: Status, n: Status, b_reason: str, n_reason: str
) -> Change | None:
    """The change between two statuses of one subject, or None when there is none."""
    if b is n:
        if b in _SKIP and b_reason != n_reason:
            return Change(
                kind=ChangeKind.SKIP_REASON,
                subject=subject,
                base=b_reason,
                new=n_reason,
                regression=False,
            )
        return None
    detail = n_reason
    if n is Status.FLAKY and b not in _BAD:
        kind, regression = ChangeKind.FLAKY, True
    elif n in _BAD and b not in _BAD:
        kind, regression = ChangeKind.NEW_FAILURE, True
    elif n in _SKIP and b not in _SKIP:
        kind, regression = ChangeKind.NEW_SKIP, True
    elif b in _BAD | {Status.FLAKY} and n not in _BAD | _SKIP | {Status.FLAKY}:
        kind, regression = ChangeKind.FIXED, False
    elif b in _SKIP and n not in _SKIP and n not in _BAD:
        kind, regression, detail = ChangeKind.VANISHED_SKIP, False, f"skipped before: {b_reason}"
    else:
        kind, regression = ChangeKind.STATUS, False
    return Change(
        kind=kind, subject=subject, base=str(b), new=str(n), detail=detail, regression=regression
    )


def _duration_change(
    subject: str, b: float, n: float, th: Thresholds, what: str = ""
) -> Change | None:
    if b <= 0 or n <= 0:
        return None
    ratio = n / b
    base, new = f"{b:.3f}s", f"{n:.3f}s"
    if ratio >= th.ratio and n - b >= th.seconds:
        detail = f"{ratio:.2f}x slower (+{n - b:.3f}s){what}"
        return Change(
            kind=ChangeKind.SLOWER, subject=subject, base=base, new=new, detail=detail,
            regression=True,
        )
    if 1 / ratio >= th.ratio and b - n >= th.seconds:
        detail = f"{1 / ratio:.2f}x faster (-{b - n:.3f}s){what}"
        return Change(
            kind=ChangeKind.FASTER, subject=subject, base=base, new=new, detail=detail,
            regression=False,
        )
    return None


def _pair_moved(
    a: dict[tuple[str, str, str], Merged], b: dict[tuple[str, str, str], Merged]
) -> dict[tuple[str, str, str], Merged]:
    """``b`` with a result that moved to another binary slot re-keyed as in ``a``: a scenario
    and engine with one unmatched key on each side is the same result (a candidate run with a
    second ``--qemu`` runs a ``qemu>=11`` scenario on ``qemu[1]``, where it skipped before)."""
    lone_a: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    lone_b: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for keys, other, lone in ((a, b, lone_a), (b, a, lone_b)):
        for key in keys:
            if key not in other:
                lone.setdefault(key[:2], []).append(key)
    out = dict(b)
    for pair, old_keys in lone_a.items():
        new_keys = lone_b.get(pair, [])
        if len(old_keys) == 1 and len(new_keys) == 1:
            out[old_keys[0]] = out.pop(new_keys[0])
    return out


def _compare_runs(
    base: RunDocument, new: RunDocument, th: Thresholds
) -> tuple[list[Change], int]:
    a = _by_key(base)
    b = _pair_moved(a, _by_key(new))
    changes: list[Change] = []
    unchanged = 0
    for key in dict.fromkeys([*a, *b]):
        old, cur = a.get(key), b.get(key)
        if cur is None:
            assert old is not None
            changes.append(
                Change(
                    kind=ChangeKind.MISSING, subject=_subject(key, old.binary),
                    base=str(old.status), detail="not in the new report", regression=True,
                )
            )
            continue
        subject = _subject(key, cur.binary)
        if old is None:
            flaky = cur.status is Status.FLAKY
            bad = cur.status in _BAD or flaky
            kind = ChangeKind.NEW_FAILURE if bad else ChangeKind.ADDED
            kind = ChangeKind.FLAKY if flaky else kind
            changes.append(
                Change(
                    kind=kind, subject=subject,
                    new=str(cur.status), detail=cur.reason or "not in the base report",
                    regression=bad,
                )
            )
            continue
        change = _status_change(subject, old.status, cur.status, old.reason, cur.reason)
        if change is None and old.duration_s is not None and cur.duration_s is not None:
            many = max(old.runs, cur.runs) > 1
            runs = f", median of {old.runs} / {cur.runs} runs" if many else ""
            change = _duration_change(subject, old.duration_s, cur.duration_s, th, runs)
        if change is None:
            unchanged += 1
        else:
            changes.append(change)
    if not new.complete:
        why = new.interrupted or "still running"
        changes.append(
            Change(
                kind=ChangeKind.INCOMPLETE, subject="report", base="complete" if base.complete
                else "incomplete", new="incomplete", detail=f"the new run was interrupted ({why})",
                regression=True,
            )
        )
    if new.gate is not None and not new.gate.passed and (base.gate is None or base.gate.passed):
        changes.append(
            Change(
                kind=ChangeKind.GATE, subject="strict gate",
                base="passed" if base.gate else "not run", new="failed",
                detail=new.gate.verdict, regression=True,
            )
        )
    return changes, unchanged


_CONTRACT_STATUS: Final = {
    "passed": Status.PASSED,
    "deviation": Status.PASSED,
    "skipped": Status.SKIPPED,
    "failed": Status.FAILED,
}


def _compare_contract(base: ContractDocument, new: ContractDocument) -> tuple[list[Change], int]:
    a = {c.name: c for c in base.checks}
    b = {c.name: c for c in new.checks}
    changes: list[Change] = []
    unchanged = 0
    for name in dict.fromkeys([*a, *b]):
        old, cur = a.get(name), b.get(name)
        if cur is None:
            changes.append(
                Change(
                    kind=ChangeKind.MISSING, subject=name, base=old.outcome if old else None,
                    detail="not in the new report", regression=True,
                )
            )
            continue
        if old is None:
            bad = cur.outcome == "failed"
            changes.append(
                Change(
                    kind=ChangeKind.NEW_FAILURE if bad else ChangeKind.ADDED, subject=name,
                    new=cur.outcome, detail=cur.detail, regression=bad,
                )
            )
            continue
        if old.outcome == cur.outcome:
            if old.detail != cur.detail and cur.outcome in ("skipped", "deviation"):
                changes.append(
                    Change(
                        kind=ChangeKind.SKIP_REASON, subject=name, base=old.detail,
                        new=cur.detail, regression=False,
                    )
                )
            else:
                unchanged += 1
            continue
        bs, ns = _CONTRACT_STATUS[old.outcome], _CONTRACT_STATUS[cur.outcome]
        change = _status_change(name, bs, ns, old.detail, cur.detail)
        if change is None:  # passed <-> deviation: the same verdict, another reason
            change = Change(kind=ChangeKind.STATUS, subject=name, regression=False)
        update = {"base": old.outcome, "new": cur.outcome, "detail": cur.detail}
        changes.append(change.model_copy(update=update))
    return changes, unchanged


def _host_changes(base: HostInfo | None, new: HostInfo | None) -> list[Change]:
    if base is None or new is None:
        return []
    return [
        Change(kind=ChangeKind.HOST, subject=field, base=b, new=n, regression=False)
        for field, b, n in host_diff(base, new)
    ]


def _created(value: object) -> str | None:
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value) if value is not None else None


def _ref(report: LoadedReport) -> ReportRef:
    host = getattr(report.doc, "host", None)
    return ReportRef(
        path=report.path,
        kind=report.kind,
        created=_created(getattr(report.doc, "created", None)),
        host=host_id(host) if host is not None else None,
    )


def compare_reports(
    base: LoadedReport, new: LoadedReport, thresholds: Thresholds | None = None
) -> Comparison:
    """Compare two reports of one kind.

    :raise CompareError: the kinds differ (the message names both files and kinds)
    """
    from qmpgmem.report import compare_facts

    th = thresholds or Thresholds()
    if base.kind != new.kind:
        raise CompareError(
            f"{new.path} is a {new.kind} report and {base.path} a {base.kind} report; "
            "compare takes two reports of the same kind"
        )
    changes: list[Change]
    if isinstance(base.doc, RunDocument) and isinstance(new.doc, RunDocument):
        changes, unchanged = _compare_runs(base.doc, new.doc, th)
    elif isinstance(base.doc, ContractDocument) and isinstance(new.doc, ContractDocument):
        changes, unchanged = _compare_contract(base.doc, new.doc)
    else:
        changes, unchanged = compare_facts.compare(base.doc, new.doc, th)
    changes += _host_changes(getattr(base.doc, "host", None), getattr(new.doc, "host", None))
    return Comparison(
        compared=base.kind,
        base=_ref(base),
        new=_ref(new),
        thresholds=th,
        unchanged=unchanged,
        regressions=sum(1 for c in changes if c.regression),
        changes=changes,
    )


def regressions_first(changes: Iterable[Change]) -> list[Change]:
    """Regressions, then the rest, each in report order (a stable sort)."""
    return sorted(changes, key=lambda c: not c.regression)
