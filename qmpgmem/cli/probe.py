"""``qmpgmem probe``: what this host's KVM and QEMU binaries support, and where each answer
came from — as a table for people and as JSON for tools and bug reports (the ``probe`` kind of
report/envelope.py: the host fingerprint, then the facts)."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from qmpgmem.cli.group import cli
from qmpgmem.cli.output import print_table, table_console
from qmpgmem.engines.qemu.flavours import FLAVOURS, FlavourPlan, plan_flavour_confirmed
from qmpgmem.host import HostFacts, probe_host
from qmpgmem.host.facts import Fact
from qmpgmem.host.fingerprint import host_fingerprint
from qmpgmem.report.envelope import FlavourPlanRecord, ProbeDocument, document_json


async def _probe(
    binaries: list[str] | None, flavours: bool
) -> tuple[HostFacts, dict[str, dict[str, FlavourPlan]]]:
    facts = await probe_host(binaries)
    plans: dict[str, dict[str, FlavourPlan]] = {}
    if flavours:
        for qemu in facts.qemu:
            plans[qemu.binary] = {
                name: await plan_flavour_confirmed(name, qemu, facts.kvm)
                for name in (*FLAVOURS, "auto")
            }
    return facts, plans


def _value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "(none)"
    return str(value)


def _fact_table(title: str, facts: list[Fact]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("capability", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("source", style="dim", overflow="fold")
    for fact in facts:
        table.add_row(Text(fact.name), Text(_value(fact.value)), Text(fact.source))
    return table


def _flavour_table(binary: str, plans: dict[str, FlavourPlan]) -> Table:
    table = Table(title=f"guest_memfd flavours with {binary}", title_justify="left")
    table.add_column("flavour", no_wrap=True)
    table.add_column("usable", no_wrap=True)
    table.add_column("plan / reason", overflow="fold")
    for name, plan in plans.items():
        if plan.usable:
            what = f"{plan.name}: {plan.backend_type} " + " ".join(plan.objects)
            table.add_row(name, Text("yes", style="green"), Text(what))
        else:
            table.add_row(name, Text("no", style="yellow"), Text(plan.skip_reason or ""))
    return table


def _plan_record(plan: FlavourPlan) -> FlavourPlanRecord:
    return FlavourPlanRecord(
        name=plan.name,
        usable=plan.usable,
        skip_reason=plan.skip_reason,
        machine=plan.machine,
        machine_opts=plan.machine_opts,
        objects=plan.objects,
        backend_type=plan.backend_type,
        backend_props=plan.backend_props,
        bios=plan.bios,
        cpu=plan.cpu,
    )


def probe_document(facts: HostFacts, plans: dict[str, dict[str, FlavourPlan]]) -> ProbeDocument:
    """The JSON document: the envelope (host fingerprint of the binaries probed), a summary,
    every fact with its source, the raw models, the plans."""
    host = host_fingerprint(
        qemu_binaries=[q.binary for q in facts.qemu],
        qemu_versions={q.binary: q.version_str for q in facts.qemu},
        kernel_release=facts.kvm.kernel_release,
        kvm_backend=facts.kvm.backend or "",
    )
    return ProbeDocument.model_validate(
        {
            "host": host,
            "summary": facts.summary(),
            "facts": facts.facts(),
            "kvm": facts.kvm,
            "qemu": facts.qemu,
            "flavours": {
                binary: {name: _plan_record(p) for name, p in by_name.items()}
                for binary, by_name in plans.items()
            },
        }
    )


@cli.command(short_help="Show what this host's KVM and QEMU binaries support.")
@click.option(
    "--qemu",
    "binaries",
    multiple=True,
    metavar="BIN",
    help="QEMU binary to probe (repeatable; default: qemu-system-x86_64 from PATH).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print one JSON document instead (schema: qmpgmem schema --report probe).",
)
@click.option(
    "--flavours/--no-flavours",
    default=True,
    show_default=True,
    help="Also plan each guest_memfd flavour and let each QEMU binary confirm or refuse it.",
)
def probe(binaries: tuple[str, ...], as_json: bool, flavours: bool) -> None:
    """Probe /dev/kvm (capabilities, VM types, memory attributes, backend module) and each
    QEMU binary over QMP (version, QOM types and properties, QMP commands, firmware).

    \b
    Examples:
      qmpgmem probe
      qmpgmem probe --json --qemu /usr/bin/qemu-system-x86_64 --qemu ~/qemu-sid/qemu
    """
    facts, plans = asyncio.run(_probe(list(binaries) or None, flavours))
    if as_json:
        click.echo(document_json(probe_document(facts, plans)), nl=False)
        return
    console = table_console()
    print_table(console, _fact_table("kernel and KVM", facts.kvm.facts()))
    for qemu in facts.qemu:
        print_table(console, _fact_table(f"QEMU {qemu.binary}", qemu.facts()))
        if qemu.binary in plans:
            print_table(console, _flavour_table(qemu.binary, plans[qemu.binary]))
    if not facts.qemu:
        console.print("[yellow]no QEMU binary probed[/] (none in PATH; use --qemu BIN)")
