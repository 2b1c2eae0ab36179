"""Many hosts' reports as one scenario x host matrix, each host with its fingerprint and class.

Why: a platform team qualifies a host image on many hosts of several classes; the question
is which scenario broke on which hosts, and whether those hosts share a class, a kernel or a
QEMU package. Every ``run`` (and ``kernel-contract``) report becomes a column of its host —
a host is its fingerprint's hostname plus a hash (report/hosts.py), so reports of one host
merge into one column and a re-imaged host gets a new one. A row is a scenario x engine x
QEMU binary (by its place in the host's list, ``qemu[0]``), or a kernel-contract check.

A host's class is, in this order: the first ``--class NAME=GLOB`` whose glob matches its
hostname, its host id or the report's path; the stem of the expected-skips file its strict
run was gated with (``--expect-skips classes/kvm_amd-snp.yaml`` gives ``kvm_amd-snp``, the
layout docs/ci.md recommends); else ``KVM backend on CPU model``.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from collections.abc import Sequence
from pathlib import PurePath
from typing import Literal

from pydantic import BaseModel, Field

from qmpgmem.report.compare import merge_results, result_slot
from qmpgmem.report.envelope import ContractDocument, RunDocument
from qmpgmem.report.hosts import host_hash, host_id
from qmpgmem.report.inputs import LoadedReport, ReportInputError
from qmpgmem.report.result import HostInfo, ScenarioResult, Summary

__all__ = [
    "CONTRACT",
    "Aggregate",
    "AggregateCell",
    "AggregateHost",
    "AggregateRow",
    "ClassRule",
    "aggregate",
    "parse_class_rule",
]

#: statuses a cell can have: a run's, and a kernel-contract check's "deviation"
BAD = frozenset({"failed", "error", "timeout", "flaky"})
#: the engine column of kernel-contract rows
CONTRACT = "kernel-contract"


class ClassRule(BaseModel):
    """``--class NAME=GLOB``."""

    name: str
    glob: str


class AggregateHost(BaseModel):
    id: str
    hostname: str
    hash: str
    host_class: str
    #: where the class came from: "--class NAME=GLOB", "baseline FILE", "derived"
    class_source: str
    files: list[str]
    #: when each of the host's reports was written (ISO 8601, UTC)
    created: list[str]
    #: False when one of the host's runs was interrupted; its missing rows are "miss"
    complete: bool
    interrupted: list[str] = Field(default_factory=list)
    summary: Summary
    fingerprint: HostInfo


class AggregateRow(BaseModel):
    id: str  # "basic-smoke [qemu, qemu[0]]", "kernel-contract create.flags"
    scenario: str  # the scenario, or the check
    engine: str  # qemu, kvm, or "kernel-contract"
    binary: str  # "qemu[0]", "" (kvm engine, checks)


class AggregateCell(BaseModel):
    status: str
    reason: str = ""
    duration_s: float | None = None
    runs: int = 1
    #: the QEMU binary's version on this host ("10.0.2")
    binary_version: str | None = None
    file: str
    created: str


class Aggregate(BaseModel):
    """What ``qmpgmem aggregate --json`` writes."""

    schema_version: Literal[1] = 1
    kind: Literal["aggregate"] = "aggregate"
    created: str
    hosts: list[AggregateHost]
    rows: list[AggregateRow]
    #: row id -> host id -> cell; a host without a cell did not run that row
    cells: dict[str, dict[str, AggregateCell]]

    def state(self, row: AggregateRow, host: AggregateHost) -> tuple[str, AggregateCell | None]:
        """A row on a host: its cell's status and the cell; "miss" when the host's run was
        interrupted before the row (a run row the host lacks), "absent" when its reports do
        not have the row at all."""
        cell = self.cells.get(row.id, {}).get(host.id)
        if cell is not None:
            return cell.status, cell
        if not host.complete and row.engine != CONTRACT:
            return "miss", None
        return "absent", None

    def bad_cells(self) -> int:
        return sum(1 for row in self.cells.values() for c in row.values() if c.status in BAD)

    def classes(self) -> list[str]:
        return list(dict.fromkeys(h.host_class for h in self.hosts))


def parse_class_rule(text: str) -> ClassRule:
    """``NAME=GLOB`` as a rule; :raise ValueError: not of that form."""
    name, sep, glob = text.partition("=")
    if not sep or not name.strip() or not glob.strip():
        raise ValueError(f"--class {text!r} is not NAME=GLOB (e.g. snp='epyc-snp-*')")
    return ClassRule(name=name.strip(), glob=glob.strip())


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _class_of(
    host: HostInfo, hid: str, path: str, doc: RunDocument | ContractDocument,
    rules: Sequence[ClassRule],
) -> tuple[str, str]:
    for rule in rules:
        if any(fnmatch.fnmatchcase(x, rule.glob) for x in (host.hostname, hid, path)):
            return rule.name, f"--class {rule.name}={rule.glob}"
    gate = getattr(doc, "gate", None)
    if gate is not None and gate.baseline and gate.baseline != "no baseline":
        return PurePath(gate.baseline).stem, f"baseline {gate.baseline}"
    cpu = host.cpu_model or host.cpu or "unknown CPU"
    return f"{host.kvm_backend or 'no KVM'} on {cpu}", "derived"


def _contract_results(
    doc: ContractDocument, path: str
) -> list[tuple[AggregateRow, AggregateCell]]:
    created = _stamp(doc.created)
    return [
        (
            AggregateRow(id=f"kernel-contract {c.name}", scenario=c.name,
                         engine=CONTRACT, binary=""),
            AggregateCell(status=c.outcome, reason=c.detail, file=path, created=created),
        )
        for c in doc.checks
    ]


def _run_results(doc: RunDocument, path: str) -> list[tuple[AggregateRow, AggregateCell]]:
    created = _stamp(doc.created)
    groups: dict[tuple[str, str, str], list[ScenarioResult]] = {}
    for r in doc.results:
        groups.setdefault((r.scenario, r.engine, result_slot(r, doc.host)), []).append(r)
    out = []
    for (scenario, engine, slot), results in groups.items():
        merged = merge_results(results, doc.host)
        row_id = f"{scenario} [{engine}, {slot}]" if slot else f"{scenario} [{engine}]"
        out.append(
            (
                AggregateRow(id=row_id, scenario=scenario, engine=engine, binary=slot),
                AggregateCell(
                    status=str(merged.status), reason=merged.reason, duration_s=merged.duration_s,
                    runs=merged.runs, binary_version=merged.binary_version, file=path,
                    created=created,
                ),
            )
        )
    return out


def _add_summary(into: Summary, doc: RunDocument | ContractDocument) -> Summary:
    if isinstance(doc, ContractDocument):
        add = Summary(passed=doc.counts.passed + doc.counts.deviation,
                      failed=doc.counts.failed, skipped=doc.counts.skipped)
    else:
        add = doc.summary
    return Summary(**{k: getattr(into, k) + getattr(add, k) for k in Summary.model_fields})


def aggregate(
    reports: Sequence[LoadedReport],
    rules: Sequence[ClassRule] = (),
    created: dt.datetime | None = None,
) -> Aggregate:
    """The matrix of ``reports`` (run and kernel-contract reports).

    :raise ReportInputError: a report of another kind (probe, bench)
    """
    hosts: dict[str, AggregateHost] = {}
    rows: dict[str, AggregateRow] = {}
    cells: dict[str, dict[str, AggregateCell]] = {}
    for report in reports:
        doc = report.doc
        if not isinstance(doc, RunDocument | ContractDocument):
            raise ReportInputError(
                report.path,
                f"is a {report.kind} report; aggregate takes run and kernel-contract reports",
                "$.kind",
            )
        hid = host_id(doc.host)
        entry = hosts.get(hid)
        if entry is None:
            name, source = _class_of(doc.host, hid, report.path, doc, rules)
            entry = hosts[hid] = AggregateHost(
                id=hid, hostname=doc.host.hostname, hash=host_hash(doc.host), host_class=name,
                class_source=source, files=[], created=[], complete=True, summary=Summary(),
                fingerprint=doc.host,
            )
        entry.files.append(report.path)
        entry.created.append(_stamp(doc.created))
        entry.summary = _add_summary(entry.summary, doc)
        if isinstance(doc, RunDocument):
            if not doc.complete:
                entry.complete = False
                entry.interrupted.append(doc.interrupted or "incomplete")
            pairs = _run_results(doc, report.path)
        else:
            pairs = _contract_results(doc, report.path)
        for row, cell in pairs:
            rows.setdefault(row.id, row)
            by_host = cells.setdefault(row.id, {})
            # the host ran it in two reports: the later report's cell
            if hid in by_host and by_host[hid].created > cell.created:
                continue
            by_host[hid] = cell
    ordered_rows = sorted(
        rows.values(), key=lambda r: (r.engine == CONTRACT, r.scenario, r.engine, r.binary)
    )
    ordered_hosts = sorted(hosts.values(), key=lambda h: (h.host_class, h.id))
    return Aggregate(
        created=_stamp(created or dt.datetime.now(dt.UTC)),
        hosts=ordered_hosts,
        rows=ordered_rows,
        cells={r.id: cells[r.id] for r in ordered_rows},
    )
