"""``qmpgmem compare BASE NEW``: what changed between two reports of one kind, exit 1 on a
regression (report/compare.py says which changes are regressions)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from qmpgmem.cli.group import EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli
from qmpgmem.cli.output import print_table, table_console
from qmpgmem.report.compare import (
    Change,
    ChangeKind,
    CompareError,
    Comparison,
    Thresholds,
    compare_reports,
    regressions_first,
)
from qmpgmem.report.envelope import write_text_atomic
from qmpgmem.report.inputs import read_report


def _style(change: Change) -> str:
    if change.regression:
        return "bold red"
    if change.kind in (ChangeKind.FIXED, ChangeKind.VANISHED_SKIP, ChangeKind.GAINED):
        return "green"
    return "yellow" if change.kind is not ChangeKind.HOST else "dim"


def _table(title: str, changes: list[Change]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("change", no_wrap=True)
    table.add_column("subject", overflow="fold")
    table.add_column("base", overflow="fold")
    table.add_column("new", overflow="fold")
    table.add_column("detail", overflow="fold")
    for c in changes:
        table.add_row(
            Text(str(c.kind), style=_style(c)),
            Text(c.subject),
            Text(c.base or "-"),
            Text(c.new or "-"),
            Text(c.detail),
        )
    return table


def _side(ref_path: str, host: str | None, created: str | None) -> str:
    return f"{ref_path} ({', '.join(x for x in (host, created) if x)})"


def _print(result: Comparison, stderr: bool) -> None:
    console = table_console(stderr=stderr, highlight=False)
    b, n = result.base, result.new
    console.print(
        Text(f"compare {result.compared}: {_side(b.path, b.host, b.created)} -> "
             f"{_side(n.path, n.host, n.created)}")
    )
    ordered = regressions_first(result.changes)
    main = [c for c in ordered if c.kind is not ChangeKind.HOST]
    host = [c for c in ordered if c.kind is ChangeKind.HOST]
    if main:
        print_table(console, _table("changes", main))
    if host:
        print_table(console, _table("host fingerprint", host))
    others = len(main) - result.regressions
    verdict = (
        f"{result.regressions} regression{'s' if result.regressions != 1 else ''}, "
        f"{others} other change{'s' if others != 1 else ''}, "
        f"{len(host)} host field{' differs' if len(host) == 1 else 's differ'}, "
        f"{result.unchanged} unchanged"
    )
    console.print(Text(verdict, style="bold red" if result.regressions else "green"))


@cli.command(short_help="Compare two reports of one kind: regressions, fixes, host changes.")
@click.argument("base", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("new", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, allow_dash=True, dir_okay=False),
    help="Write the comparison as JSON here ('-': stdout, the tables then go to stderr).",
)
@click.option(
    "--ratio",
    type=click.FloatRange(min=1.0),
    metavar="FACTOR",
    default=Thresholds().ratio,
    show_default=True,
    help="Noise threshold: a duration or bench figure regresses only when worse by this "
    "factor and (for times) by --seconds.",
)
@click.option(
    "--seconds",
    type=click.FloatRange(min=0.0),
    metavar="SECONDS",
    default=Thresholds().seconds,
    show_default=True,
    help="Noise threshold: the least a time must grow by to regress.",
)
def compare(base: Path, new: Path, json_path: Path | None, ratio: float, seconds: float) -> None:
    """Compare NEW against BASE: two `run --json` reports, two `kernel-contract --json`,
    two `probe --json` or two bench figures files (docs/fleet.md).

    Run reports are compared per scenario x engine x QEMU binary (x lab kernel): new
    failures, new skips, results flaky now (run --repeat), missing results, durations beyond
    the noise threshold (both --ratio and --seconds), an interrupted run or a failed strict
    gate are regressions (exit 1); fixes, vanished
    skips, changed skip reasons and other status changes are listed. Probe reports: lost
    capabilities regress, other changes are listed. Host fingerprint differences are
    always listed and never fail. Two files of different kinds, or of a schema_version this
    qmpgmem does not read, are refused (exit 2).

    \b
    Examples:
      qmpgmem compare last-good/run.json candidate/run.json
      qmpgmem compare before.json after.json --ratio 2 --seconds 1 --json diff.json
      qmpgmem compare probe-old.json probe-new.json      # what changed on the host
    """
    old, cur = read_report(base), read_report(new)
    try:
        result = compare_reports(old, cur, Thresholds(ratio=ratio, seconds=seconds))
    except CompareError as exc:
        click.echo(f"error: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from exc
    to_stdout = json_path is not None and str(json_path) == "-"
    _print(result, stderr=to_stdout)
    text = result.model_dump_json(indent=2) + "\n"
    if to_stdout:
        click.echo(text, nl=False)
    elif json_path is not None:
        write_text_atomic(json_path, text)
    raise click.exceptions.Exit(EXIT_FAILED if result.regressions else EXIT_OK)
