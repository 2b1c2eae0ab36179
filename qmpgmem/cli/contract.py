"""``qmpgmem kernel-contract``: the kernel's guest_memfd contract, checked on this host.

``--json`` writes the ``kernel-contract`` kind of report/envelope.py: the host fingerprint,
the counts, then each check; ``--junit`` the same as JUnit XML (report/contract_junit.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape
from rich.table import Table

from qmpgmem.cli.group import EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli
from qmpgmem.cli.output import print_table, table_console
from qmpgmem.report.envelope import (
    ContractCheck,
    ContractCounts,
    ContractDocument,
    document_json,
    write_document,
)

if TYPE_CHECKING:
    from qmpgmem.engines.kvm.contract import CheckResult

_STYLE = {"passed": "green", "failed": "bold red", "deviation": "yellow", "skipped": "cyan"}


def contract_document(results: Sequence[CheckResult]) -> ContractDocument:
    """The JSON document of a kernel-contract run (host fingerprint, counts, checks)."""
    from qmpgmem.host.fingerprint import host_fingerprint

    checks = [
        ContractCheck(
            name=r.name,
            outcome=str(r.outcome),
            expectation=r.expectation,
            source=r.source,
            backend=r.backend,
            detail=r.detail,
        )
        for r in results
    ]
    counts = ContractCounts(**{o: sum(1 for c in checks if c.outcome == o) for o in _STYLE})
    return ContractDocument(host=host_fingerprint(engine="kvm"), counts=counts, checks=checks)


@cli.command("kernel-contract", short_help="Check the kernel's guest_memfd contract here.")
@click.argument("names", nargs=-1)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, allow_dash=True),
    help="Write the JSON report here ('-': stdout, the table then goes to stderr; "
    "schema: qmpgmem schema --report kernel-contract).",
)
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(path_type=Path),
    help="Write JUnit XML here (one testcase per check; a deviation passes and says so).",
)
@click.option("--list", "list_only", is_flag=True, help="List the checks and exit.")
def kernel_contract(
    names: tuple[str, ...], json_path: Path | None, junit_path: Path | None, list_only: bool
) -> None:
    """Run the guest_memfd checks derived from Linux's guest_memfd_test.c and api.rst.

    Each check states the upstream expectation and runs it on /dev/kvm (a VM, a guest_memfd,
    memslots, a tiny guest where needed). A result is passed, failed, skipped (this host lacks
    what the check needs), or deviation: this KVM backend is known to behave differently,
    with the reason (docs/kernel-contract.md). Exit 1 when any check failed.

    \b
    Examples:
      qmpgmem kernel-contract
      qmpgmem kernel-contract create.flags bind.past_end --json contract.json
      qmpgmem kernel-contract --junit build/contract.xml
      qmpgmem kernel-contract --json - | jq '.checks[] | select(.outcome != "passed")'
    """
    from qmpgmem.engines.kvm.contract import CHECKS, run_checks

    if list_only:
        for c in CHECKS:
            click.echo(f"{c.name}: {c.expectation}")
        return
    unknown = sorted(set(names) - {c.name for c in CHECKS})
    if unknown:
        click.echo(f"unknown check(s): {', '.join(unknown)} (see --list)", err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
    try:
        results = run_checks(list(names) or None)
    except OSError as exc:
        click.echo(f"error: cannot use /dev/kvm: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from exc
    to_stdout = json_path is not None and str(json_path) == "-"
    table = Table(title="guest_memfd kernel contract")
    table.add_column("check", no_wrap=True)
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for r in results:
        style = _STYLE.get(str(r.outcome), "")
        table.add_row(escape(r.name), f"[{style}]{r.outcome}[/]", escape(r.detail or r.expectation))
    console = table_console(stderr=to_stdout, highlight=False)
    print_table(console, table)
    doc = contract_document(results)
    click.echo(", ".join(f"{n} {o}" for o, n in doc.counts.model_dump().items()), err=to_stdout)
    if to_stdout:
        click.echo(document_json(doc), nl=False)
    elif json_path is not None:
        write_document(doc, json_path)
    if junit_path is not None:
        from qmpgmem.report.contract_junit import write_contract_junit

        write_contract_junit(doc, junit_path, {r.name: r.duration_s for r in results})
    raise click.exceptions.Exit(EXIT_FAILED if doc.counts.failed else EXIT_OK)
