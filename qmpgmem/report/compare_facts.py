"""Comparing two ``probe`` reports (what changed on the host) or two bench figures files.

Why apart from compare.py: these compare values, not statuses. A probe's regressions are
capabilities the host lost: a fact that was true and is false now, a list (VM types,
guest_memfd flags, each binary's QMP commands, QOM and machine types) that lost entries, a
fact that is gone, a guest_memfd flavour that was usable and is not. Other value changes
(a version) are listed, not failed. A bench figure regresses when it is worse by the ratio
threshold, and, for a figure in a time unit, by the seconds threshold too; when both files
quote it beside a baseline from the same run (report/bench.py), the figure relative to its
baseline is what is judged.
"""

from __future__ import annotations

from typing import Any

from qmpgmem.report.bench import BenchDocument, BenchFigure, seconds
from qmpgmem.report.compare import Change, ChangeKind, Thresholds
from qmpgmem.report.envelope import ProbeDocument

__all__ = ["compare"]

#: list entries shown in a change before "... and N more"
_SHOWN = 8


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "(none)"
    return "-" if value is None else str(value)


def _listed(items: list[Any]) -> str:
    head = ", ".join(map(str, items[:_SHOWN]))
    return head + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _fact_change(name: str, old: Any, new: Any) -> Change | None:
    if old == new:
        return None
    if isinstance(old, list) and isinstance(new, list):
        lost = [x for x in old if x not in new]
        gained = [x for x in new if x not in old]
        parts = ([f"lost {_listed(lost)}"] if lost else []) + (
            [f"gained {_listed(gained)}"] if gained else []
        )
        kind = ChangeKind.LOST if lost else ChangeKind.GAINED if gained else ChangeKind.CHANGED
        return Change(
            kind=kind,
            subject=name,
            base=_text(old) if len(old) <= _SHOWN else f"{len(old)} entries",
            new=_text(new) if len(new) <= _SHOWN else f"{len(new)} entries",
            detail="; ".join(parts) or "reordered",
            regression=bool(lost),
        )
    if isinstance(old, bool) and isinstance(new, bool):
        kind = ChangeKind.LOST if old else ChangeKind.GAINED
        return Change(kind=kind, subject=name, base=_text(old), new=_text(new), regression=old)
    return Change(
        kind=ChangeKind.CHANGED, subject=name, base=_text(old), new=_text(new), regression=False
    )


def _flavours(doc: ProbeDocument) -> dict[str, tuple[bool, str]]:
    """``qemu[i] flavour`` -> (usable, skip reason), binaries by their place in the probe."""
    out: dict[str, tuple[bool, str]] = {}
    for i, by_name in enumerate(doc.flavours.values()):
        for name, plan in by_name.items():
            out[f"qemu[{i}] flavour {name}"] = (plan.usable, plan.skip_reason or "")
    return out


def _facts(doc: ProbeDocument) -> dict[str, Any]:
    """The probe's facts by name, plus each binary's QMP commands and events, QOM types and
    machine types as lists (``qemu[0].qmp_commands``): the facts only count those."""
    out: dict[str, Any] = {f.name: f.value for f in doc.facts}
    for i, q in enumerate(doc.qemu):
        out[f"qemu[{i}].qmp_commands"] = sorted(q.qmp_commands)
        out[f"qemu[{i}].qmp_events"] = sorted(q.qmp_events)
        out[f"qemu[{i}].qom_types"] = sorted(q.qom_types)
        out[f"qemu[{i}].machine_types"] = sorted(q.machine_types)
    return out


def _compare_probe(base: ProbeDocument, new: ProbeDocument) -> tuple[list[Change], int]:
    a, b = _facts(base), _facts(new)
    changes: list[Change] = []
    unchanged = 0
    for name in dict.fromkeys([*a, *b]):
        if name not in b:
            changes.append(
                Change(
                    kind=ChangeKind.LOST, subject=name, base=_text(a[name]),
                    detail="the new probe does not report it", regression=True,
                )
            )
        elif name not in a:
            changes.append(
                Change(kind=ChangeKind.GAINED, subject=name, new=_text(b[name]), regression=False)
            )
        elif (change := _fact_change(name, a[name], b[name])) is not None:
            changes.append(change)
        else:
            unchanged += 1
    fa, fb = _flavours(base), _flavours(new)
    for key in dict.fromkeys([*fa, *fb]):
        old, cur = fa.get(key), fb.get(key)
        if old is None or cur is None:
            if old is not None and old[0]:  # a usable flavour the new probe did not plan
                changes.append(
                    Change(
                        kind=ChangeKind.LOST, subject=key, base="usable",
                        detail="not planned by the new probe", regression=True,
                    )
                )
            continue
        if old[0] == cur[0]:
            unchanged += 1
        elif old[0]:
            changes.append(
                Change(
                    kind=ChangeKind.LOST, subject=key, base="usable", new="not usable",
                    detail=cur[1], regression=True,
                )
            )
        else:
            changes.append(
                Change(
                    kind=ChangeKind.GAINED, subject=key, base="not usable", new="usable",
                    detail=f"was: {old[1]}", regression=False,
                )
            )
    return changes, unchanged


def _judged(fig: BenchFigure, other: BenchFigure) -> tuple[float, float, str]:
    """(base-side value, new-side value, what is judged) for two figures of one name."""
    if fig.baseline and other.baseline and fig.baseline.value > 0 and other.baseline.value > 0:
        name = fig.baseline.name or "its baseline"
        return fig.value / fig.baseline.value, other.value / other.baseline.value, f" / {name}"
    return fig.value, other.value, ""


def _figure_change(old: BenchFigure, cur: BenchFigure, th: Thresholds) -> Change | None:
    b, n, rel = _judged(old, cur)
    if b <= 0 or n <= 0:
        return None
    worse = n / b if cur.better == "lower" else b / n
    unit = cur.unit
    base, new = f"{old.value:g}{unit and ' ' + unit}", f"{cur.value:g}{unit and ' ' + unit}"
    sb, sn = seconds(old.value, old.unit), seconds(cur.value, cur.unit)
    far_enough = sb is None or sn is None or abs(sn - sb) >= th.seconds
    if worse >= th.ratio and far_enough:
        return Change(
            kind=ChangeKind.SLOWER, subject=cur.name, base=base, new=new,
            detail=f"{worse:.2f}x worse (value{rel})", regression=True,
        )
    if worse > 0 and 1 / worse >= th.ratio and far_enough:
        return Change(
            kind=ChangeKind.FASTER, subject=cur.name, base=base, new=new,
            detail=f"{1 / worse:.2f}x better (value{rel})", regression=False,
        )
    return None


def _compare_bench(base: BenchDocument, new: BenchDocument, th: Thresholds) -> tuple[
    list[Change], int
]:
    a = {f.name: f for f in base.figures}
    b = {f.name: f for f in new.figures}
    changes: list[Change] = []
    unchanged = 0
    for name in dict.fromkeys([*a, *b]):
        old, cur = a.get(name), b.get(name)
        if cur is None:
            changes.append(
                Change(
                    kind=ChangeKind.MISSING, subject=name, base=f"{old.value:g}" if old else None,
                    detail="not in the new figures", regression=True,
                )
            )
        elif old is None:
            changes.append(
                Change(kind=ChangeKind.ADDED, subject=name, new=f"{cur.value:g}", regression=False)
            )
        elif (change := _figure_change(old, cur, th)) is not None:
            changes.append(change)
        else:
            unchanged += 1
    return changes, unchanged


def compare(base: Any, new: Any, th: Thresholds) -> tuple[list[Change], int]:
    """The changes between two probe reports or two bench files, and how many were equal."""
    if isinstance(base, ProbeDocument) and isinstance(new, ProbeDocument):
        return _compare_probe(base, new)
    if isinstance(base, BenchDocument) and isinstance(new, BenchDocument):
        return _compare_bench(base, new, th)
    raise TypeError(f"cannot compare {type(base).__name__} with {type(new).__name__}")
