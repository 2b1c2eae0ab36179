"""``qmpgmem kernel-contract``: the kernel's guest_memfd contract, checked on this host."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qmpgmem.cli.main import EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli

_STYLE = {"passed": "green", "failed": "bold red", "deviation": "yellow", "skipped": "cyan"}


@cli.command("kernel-contract", short_help="Check the kernel's guest_memfd contract here.")
@click.argument("names", nargs=-1)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write results here.")
@click.option("--list", "list_only", is_flag=True, help="List the checks and exit.")
def kernel_contract(names: tuple[str, ...], json_path: Path | None, list_only: bool) -> None:
    """Run the guest_memfd checks derived from Linux's guest_memfd_test.c and api.rst.

    Each check states the upstream expectation and runs it on /dev/kvm (a VM, a guest_memfd,
    memslots, a tiny guest where needed). A result is passed, failed, skipped (this host lacks
    what the check needs), or deviation: this KVM backend is known to behave differently,
    with the reason (docs/kernel-contract.md). Exit 1 when any check failed.

    \b
    Examples:
      qmpgmem kernel-contract
      qmpgmem kernel-contract create.flags bind.past_end --json contract.json
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
    table = Table(title="guest_memfd kernel contract")
    table.add_column("check", no_wrap=True)
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for r in results:
        style = _STYLE.get(str(r.outcome), "")
        table.add_row(r.name, f"[{style}]{r.outcome}[/]", escape(r.detail or r.expectation))
    Console(highlight=False).print(table)
    counts = {o: sum(1 for r in results if str(r.outcome) == o) for o in _STYLE}
    click.echo(", ".join(f"{n} {o}" for o, n in counts.items()))
    if json_path:
        json_path.write_text(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "outcome": str(r.outcome),
                        "expectation": r.expectation,
                        "source": r.source,
                        "backend": r.backend,
                        "detail": r.detail,
                    }
                    for r in results
                ],
                indent=2,
            )
            + "\n"
        )
    raise click.exceptions.Exit(EXIT_FAILED if counts["failed"] else EXIT_OK)
