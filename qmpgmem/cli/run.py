"""``qmpgmem run``: run scenarios, show progress, print a summary, write reports.

Exit codes: 0 all passed (skips allowed), 1 anything failed, errored or timed out, 2 invalid
input. Ctrl-C and SIGTERM cancel the run; every VM is torn down before the process exits.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qmpgmem.cli.main import EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli
from qmpgmem.host.requirements import check_requirement_syntax
from qmpgmem.report.result import RunReport, ScenarioResult, Status
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import LoadedScenario, load_paths

STYLE = {
    Status.PASSED: "green",
    Status.FAILED: "bold red",
    Status.ERROR: "bold magenta",
    Status.TIMEOUT: "bold yellow",
    Status.SKIPPED: "cyan",
    Status.WOULD_RUN: "green",
    Status.WOULD_SKIP: "cyan",
}


def _select(loaded: list[LoadedScenario], keyword: str | None) -> list[LoadedScenario]:
    if not keyword:
        return loaded
    k = keyword.lower()
    return [s for s in loaded if k in s.scenario.name.lower() or k in str(s.path).lower()]


def summary_table(report: RunReport) -> Table:
    table = Table(title="qmpgmem run", show_lines=False)
    table.add_column("scenario", no_wrap=True)
    table.add_column("engine")
    table.add_column("status")
    table.add_column("time", justify="right")
    table.add_column("reason (full text above)", no_wrap=True, max_width=60)
    for r in report.results:
        reason = r.reason if len(r.reason) <= 60 else r.reason[:59] + "…"
        table.add_row(
            escape(r.scenario),
            r.engine,
            f"[{STYLE[r.status]}]{r.status}[/]",
            f"{r.duration_s:.2f}s",
            escape(reason),
        )
    return table


async def _run(
    scenarios: list[LoadedScenario],
    options: list[RunOptions],
    qemu: tuple[str, ...],
    console: Console,
    plan: bool = False,
) -> RunReport:
    from qmpgmem.session import host_context, run_scenarios

    ctx = await host_context(qemu)
    total = len(scenarios) * len(options)
    width = len(str(total))
    count = 0
    qemus = ", ".join(f"{v or '?'} ({b})" for b, v in ctx.qemu_versions.items()) or "absent"
    console.print(
        f"[bold]qmpgmem[/] {len(scenarios)} scenario(s) on engine "
        f"{' and '.join(o.engine for o in options)}; "
        f"kernel {ctx.kernel_release}, KVM backend {ctx.kvm_backend or 'none'}, QEMU {qemus}"
    )

    def on_result(r: ScenarioResult) -> None:
        nonlocal count
        count += 1
        label = r.status.value.upper()
        line = f"[{count:>{width}}/{total}] [{STYLE[r.status]}]{label:{10 if plan else 7}}[/] "
        checks = [st for st in r.steps if st.expected is not None]
        computed = sum(1 for st in checks if st.computed)
        detail = f"{r.duration_s:.2f}s"
        if checks:
            detail += f", {len(checks)} checks" + (f", {computed} by the model" if computed else "")
        line += escape(f"{r.scenario} [{r.engine}] ({detail})")
        if r.status not in (Status.PASSED, Status.WOULD_RUN):
            line += f" — {escape(r.reason)}"
        console.print(line, highlight=False)
        if r.artifacts:
            console.print(escape(f"      artifacts: {r.artifacts}"), highlight=False)
            console.print(escape(f"      reproduce: {r.reproduce}"), highlight=False)

    # A live line for the scenario in progress (on a terminal only; logs get the result lines).
    status = console.status("", spinner="dots") if console.is_terminal else None

    def on_start(loaded: LoadedScenario) -> None:
        if status is not None:
            status.update(escape(f"[{count + 1}/{total}] running {loaded.scenario.name} …"))

    if status is None:
        return await run_scenarios(scenarios, ctx, options, on_result=on_result, plan_only=plan)
    with status:
        return await run_scenarios(scenarios, ctx, options, on_start, on_result, plan_only=plan)


async def _cancellable(main: Coroutine[Any, Any, RunReport]) -> RunReport:
    """Run the main coroutine so that SIGTERM and SIGHUP cancel it like Ctrl-C does."""
    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, task.cancel)
    try:
        return await task
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)


@cli.command(short_help="Run scenarios and report what guest and host saw.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--engine",
    "engines",
    type=click.Choice(["qemu", "kvm"]),
    multiple=True,
    help="qemu (default): QEMU over QMP; kvm: a minimal VMM on /dev/kvm with real "
    "guest_memfd. Repeat to run every scenario on each engine.",
)
@click.option(
    "--qemu",
    "qemu",
    metavar="BIN",
    multiple=True,
    help="QEMU binary (default: qemu-system-x86_64). Repeat to offer several: each "
    "scenario runs with the first that meets its requirements.",
)
@click.option(
    "--accel",
    type=click.Choice(["kvm", "tcg", "auto"]),
    default=None,
    help="Override the scenarios' vm.accel (auto: kvm when /dev/kvm works).",
)
@click.option(
    "-k",
    "keyword",
    metavar="SUBSTRING",
    help="Only scenarios whose name or path contains SUBSTRING.",
)
@click.option(
    "--json", "json_path", type=click.Path(path_type=Path), help="Write the JSON report here."
)
@click.option(
    "--junit", "junit_path", type=click.Path(path_type=Path), help="Write a JUnit XML report here."
)
@click.option(
    "--artifacts",
    "artifacts",
    type=click.Path(path_type=Path),
    default=Path("qmpgmem-artifacts"),
    show_default=True,
    help="Where runs that did not pass keep argv, QEMU output, serial log, QMP "
    "transcript and a reproducer.",
)
@click.option("--keep-run-dirs", is_flag=True, help="Keep the files of passing runs too.")
@click.option(
    "--plan",
    is_flag=True,
    help="Boot no guest: print for each scenario and engine whether it would run here or why "
    "it would be skipped (the same decision a run makes).",
)
def run(
    paths: tuple[Path, ...],
    engines: tuple[str, ...],
    qemu: tuple[str, ...],
    accel: str | None,
    keyword: str | None,
    json_path: Path | None,
    junit_path: Path | None,
    artifacts: Path,
    keep_run_dirs: bool,
    plan: bool,
) -> None:
    """Run scenarios (files or directories; default: scenarios/) on the built-in micro guest.

    Each scenario ends passed, failed (an expectation did not hold), error (the VM or the
    harness broke), timeout, or skipped (this host lacks something; the reason says what).
    Exit status: 0 when everything passed or was skipped, 1 when anything failed, errored or
    timed out, 2 for invalid scenario files or options, 130 when interrupted (every VM is
    stopped first).

    \b
    Examples:
      qmpgmem run scenarios/basic
      qmpgmem run scenarios/ --accel tcg --junit build/junit.xml
      qmpgmem run --engine kvm scenarios/kernel
      qmpgmem run scenarios/ -k smoke --json report.json
      qmpgmem run scenarios/ --engine qemu --engine kvm --plan
    """
    loaded, issues = load_paths(
        paths or (Path("scenarios"),), requirement_check=check_requirement_syntax
    )
    if issues:
        for issue in issues:
            click.echo(str(issue), err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
    selected = _select(loaded, keyword)
    if not selected:
        click.echo(
            f"no scenario matches {keyword!r}" if keyword else "no scenarios found", err=True
        )
        raise click.exceptions.Exit(EXIT_USAGE)
    options = [
        RunOptions(engine=e, accel=accel, artifacts_dir=artifacts, keep_run_dirs=keep_run_dirs)
        for e in (engines or ("qemu",))
    ]
    console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
    try:
        report = asyncio.run(_cancellable(_run(selected, options, qemu, console, plan)))
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("interrupted: all VMs were stopped", err=True)
        sys.exit(130)
    s = report.summary
    if plan:  # no table: the lines above are the plan
        console.print(s.counts())
    else:
        console.print(summary_table(report))
        console.print(s.counts())
    from qmpgmem.report.files import write_reports

    write_reports(report, json_path, junit_path)
    raise click.exceptions.Exit(EXIT_OK if report.ok else EXIT_FAILED)
