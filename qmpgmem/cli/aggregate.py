"""``qmpgmem aggregate RESULTS...``: many hosts' reports as one scenario x host matrix — a
table, JSON, one static HTML page, KCIDB data (report/aggregate.py, html.py, kcidb.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from qmpgmem.cli.group import EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli
from qmpgmem.cli.output import print_table, table_console
from qmpgmem.report.aggregate import BAD, Aggregate, ClassRule, aggregate, parse_class_rule
from qmpgmem.report.envelope import write_text_atomic
from qmpgmem.report.inputs import read_report

_STYLE = {
    "passed": "green",
    "failed": "bold red",
    "error": "bold red",
    "timeout": "bold red",
    "flaky": "bold magenta",
    "skipped": "cyan",
    "deviation": "yellow",
    "miss": "magenta",
}
_SHORT = {"passed": "PASS", "failed": "FAIL", "error": "ERROR", "timeout": "TIMEOUT",
          "flaky": "FLAKY", "skipped": "SKIP", "deviation": "DEV", "would-run": "PLAN",
          "would-skip": "PLAN-SKIP", "miss": "MISS"}


def _reports(paths: tuple[Path, ...]) -> list[Path]:
    """The files given, a directory standing for its ``*.json`` files (sorted).

    :raise click.UsageError: a directory without any
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*.json"))
            if not found:
                raise click.UsageError(f"{p} has no *.json report")
            out.extend(found)
        else:
            out.append(p)
    return out


def _matrix_table(agg: Aggregate) -> Table:
    table = Table(title="scenarios \u00d7 hosts", title_justify="left")
    table.add_column("scenario", overflow="fold")
    table.add_column("engine", no_wrap=True)
    for h in agg.hosts:
        table.add_column(f"{h.id}\n{h.host_class}", no_wrap=True)
    for row in agg.rows:
        cells: list[Text] = []
        for h in agg.hosts:
            status, _ = agg.state(row, h)
            status = "-" if status == "absent" else status
            cells.append(Text(_SHORT.get(status, status), style=_STYLE.get(status, "dim")))
        engine = row.engine + (f", {row.binary}" if row.binary else "")
        table.add_row(Text(row.scenario), Text(engine), *cells)
    return table


def _host_table(agg: Aggregate) -> Table:
    table = Table(title="hosts", title_justify="left")
    for col in ("host", "class", "kernel", "KVM backend", "QEMU", "results"):
        table.add_column(col, overflow="fold")
    for h in agg.hosts:
        fp = h.fingerprint
        counts = h.summary.counts() + ("" if h.complete else " (interrupted)")
        qemu = ", ".join(q.version or q.path for q in fp.qemu) or "-"
        table.add_row(h.id, h.host_class, fp.kernel_release, fp.kvm_backend, qemu, counts)
    return table


def _write(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` ('-': stdout); True when it went to stdout."""
    if str(path) == "-":
        click.echo(text, nl=False)
        return True
    write_text_atomic(path, text)
    return False


@cli.command("aggregate", short_help="Many hosts' run reports as one scenario x host matrix.")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--class",
    "classes",
    multiple=True,
    metavar="NAME=GLOB",
    help="Put hosts whose hostname, host id or report path matches GLOB in class NAME "
    "(repeatable, first match wins; default: the strict run's --expect-skips file stem).",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path, allow_dash=True, dir_okay=False),
    help="Write the matrix as JSON here ('-': stdout).",
)
@click.option(
    "--html",
    "html_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write one static HTML page here (inline CSS, no script, works offline).",
)
@click.option(
    "--kcidb",
    "kcidb_path",
    type=click.Path(path_type=Path, allow_dash=True, dir_okay=False),
    help="Write KCIDB I/O data (schema v5.0) here ('-': stdout).",
)
@click.option(
    "--origin",
    default="qmpgmem",
    show_default=True,
    help="The KCIDB origin: the name of your CI system (lowercase letters, digits, '_').",
)
def aggregate_cmd(
    results: tuple[Path, ...],
    classes: tuple[str, ...],
    json_path: Path | None,
    html_path: Path | None,
    kcidb_path: Path | None,
    origin: str,
) -> None:
    """Aggregate RESULTS — `run --json` and `kernel-contract --json` reports of many hosts,
    files or directories of them — into one scenario x host matrix, each host identified by
    its hostname and a hash of its fingerprint, with its class (docs/fleet.md). Exit 1 when
    any cell failed, errored or timed out.

    \b
    Examples:
      qmpgmem aggregate results/*.json
      qmpgmem aggregate results/ --class snp='epyc-snp-*' --class tdx='*tdx*' \\
          --html fleet.html --json fleet.json
      qmpgmem aggregate results/ --kcidb kcidb.json --origin my_lab
    """
    try:
        rules: list[ClassRule] = [parse_class_rule(c) for c in classes]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--class") from exc
    if str(json_path) == "-" and str(kcidb_path) == "-":
        raise click.UsageError("--json - and --kcidb - cannot both go to stdout")
    agg = aggregate([read_report(p) for p in _reports(results)], rules)
    kcidb_text = None
    if kcidb_path is not None:
        from qmpgmem.report.kcidb import kcidb_data

        try:
            kcidb_text = json.dumps(kcidb_data(agg, origin), indent=2) + "\n"
        except ValueError as exc:
            click.echo(f"error: {exc}", err=True)
            raise click.exceptions.Exit(EXIT_USAGE) from exc
    to_stdout = any(p is not None and str(p) == "-" for p in (json_path, kcidb_path))
    console = table_console(stderr=to_stdout, highlight=False)
    print_table(console, _matrix_table(agg))
    print_table(console, _host_table(agg))
    bad = agg.bad_cells()
    console.print(
        Text(
            f"{len(agg.hosts)} host(s) in {len(agg.classes())} class(es), {len(agg.rows)} "
            f"row(s), {bad} cell(s) {'|'.join(sorted(BAD))}",
            style="bold red" if bad else "green",
        )
    )
    if json_path is not None:
        _write(json_path, agg.model_dump_json(indent=2) + "\n")
    if kcidb_path is not None and kcidb_text is not None:
        _write(kcidb_path, kcidb_text)
    if html_path is not None:
        from qmpgmem.report.html import render_html

        write_text_atomic(html_path, render_html(agg))
    raise click.exceptions.Exit(EXIT_FAILED if bad else EXIT_OK)

