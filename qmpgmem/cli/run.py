"""``qmpgmem run``: run scenarios, show progress, print a summary, write reports.

Exit codes: 0 all passed (skips allowed unless ``--strict``), 1 anything failed, errored, timed
out or broke the strict gate, 2 invalid input, 130 interrupted (Ctrl-C, SIGTERM, SIGHUP), 141
stdout closed. Every VM is torn down before the process exits, and the reports asked for are
rewritten after each result, so an interrupted run leaves valid ones.

With ``-j N`` up to N runs are in progress at once (:mod:`qmpgmem.scheduler`): each result
line is printed as its run finishes and carries the run's number in the plan, the reports and
the summary keep the plan's order, and an interrupted report lists every run that was in
progress.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from qmpgmem.cli.group import EXIT_FAILED, EXIT_OK, EXIT_USAGE, cli
from qmpgmem.cli.run_output import (
    STYLE,
    accelerator_line,
    artifact_lines,
    header_line,
    print_summary,
    result_line,
)
from qmpgmem.host.requirements import check_requirement_syntax
from qmpgmem.library import default_paths
from qmpgmem.report.expected_skips import ExpectedSkips, write_expected_skips
from qmpgmem.report.files import ReportFiles
from qmpgmem.report.result import (
    HostInfo,
    RunReport,
    ScenarioResult,
    Status,
    Summary,
    result_id,
)
from qmpgmem.runner import HostContext, RunOptions
from qmpgmem.sanitize import printable
from qmpgmem.scenario.loader import LoadedScenario, load_paths
from qmpgmem.scenario.tags import TagExpression, TagExpressionError

if TYPE_CHECKING:
    from qmpgmem.durations import Durations

__all__ = ["STYLE", "run"]

EXIT_STDOUT_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader left


class StdoutClosed(Exception):
    """The reader of our output went away (``qmpgmem run | head``)."""


@dataclass
class Progress:
    """What a run has done so far: enough to write a valid report at any moment."""

    files: ReportFiles
    ctx: HostContext | None = None
    engines: str = ""
    #: finished runs by their place in the plan (they finish in any order with -j)
    results: dict[int, ScenarioResult] = field(default_factory=dict)
    #: runs in progress by their place in the plan: scenario, options, when it started
    running: dict[int, tuple[LoadedScenario, RunOptions, float]] = field(default_factory=dict)
    #: why the run stopped early when no signal says it ("stdout closed")
    stopped_by: str | None = None
    allow_unsafe: bool = False

    @property
    def interrupted(self) -> str:
        """What interrupted the run: the first signal (entry.py records it), else why."""
        from qmpgmem.cli.entry import first_signal

        return self.stopped_by or first_signal() or "SIGINT"

    def report(self, complete: bool, stopped: bool = True) -> RunReport:
        """The report so far, in plan order, repeats folded. Not ``complete`` and
        ``stopped``: the run ended early, and every run that was in progress is listed as
        interrupted; not ``stopped``: a snapshot while the runs go on (those in progress are
        not listed yet)."""
        from qmpgmem.report.repeats import fold_repeats
        from qmpgmem.session import host_info

        by_index = dict(self.results)
        if not complete and stopped:
            for index, (loaded, opts, t0) in self.running.items():
                by_index[index] = ScenarioResult(
                    id=result_id(loaded.scenario.name, opts.engine, opts.qemu),
                    scenario=loaded.scenario.name,
                    file=str(loaded.path),
                    status=Status.ERROR,
                    reason=f"interrupted ({self.interrupted}) after "
                    f"{time.monotonic() - t0:.1f} s; the VM was stopped",
                    duration_s=round(time.monotonic() - t0, 4),
                    engine=opts.engine,
                    qemu=opts.qemu,
                    tags=list(loaded.scenario.tags),
                )
        results = fold_repeats([by_index[i] for i in sorted(by_index)])
        return RunReport(
            summary=Summary.of(results),
            results=results,
            host=host_info(self.ctx, self.engines) if self.ctx else _no_host(self.engines),
            complete=complete,
            interrupted=None if complete else self.interrupted,
            allow_unsafe=self.allow_unsafe,
        )


def _no_host(engines: str) -> HostInfo:
    """The fingerprint when the run stopped before the host context existed."""
    from qmpgmem.host.fingerprint import host_fingerprint

    return host_fingerprint(engine=engines)


def _select(
    loaded: list[LoadedScenario], keyword: str | None, tags: TagExpression | None
) -> list[LoadedScenario]:
    out = loaded
    if keyword:
        k = keyword.lower()
        out = [s for s in out if k in s.scenario.name.lower() or k in str(s.path).lower()]
    if tags is not None:
        out = [s for s in out if tags.matches(s.scenario.tags)]
    return out


class _Console(Console):
    """A console that reports a closed pipe as :class:`StdoutClosed` (rich would exit 1)."""

    def on_broken_pipe(self) -> None:
        # Python would complain again at exit while flushing; point stdout at /dev/null.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise StdoutClosed


def _say(console: Console, text: str) -> None:
    console.print(text, highlight=False)


async def _run(
    scenarios: list[LoadedScenario],
    options: list[RunOptions],
    qemu: tuple[str, ...],
    console: Console,
    progress: Progress,
    plan: bool,
    matrix: bool = False,
    repeat: int = 1,
    jobs: int = 1,
    budget: int | None = None,
    durations: Durations | None = None,
) -> RunReport:
    from qmpgmem.session import host_context, planned_runs, run_scenarios

    ctx = progress.ctx = await host_context(qemu)
    repeat = 1 if plan else repeat  # a plan decides each run once (as run_scenarios does)
    total = len(planned_runs(scenarios, options, ctx.qemu_binaries, matrix=matrix, repeat=repeat))
    _say(console, header_line(len(scenarios), options, ctx))
    _say(console, accelerator_line(options, ctx))
    # A live line for the runs in progress (on a terminal only; logs get the result lines).
    status = console.status("", spinner="dots") if console.is_terminal else None

    def show_running() -> None:
        if status is None or not progress.running:
            return
        names = ", ".join(
            f"{loaded.scenario.name} [{opts.engine}]"
            for loaded, opts, _ in progress.running.values()
        )
        done = f"{len(progress.results)}/{total} done"
        status.update(escape(f"[{done}] {len(progress.running)} running: {printable(names)} …"))

    def on_result(index: int, r: ScenarioResult) -> None:
        progress.results[index] = r
        progress.running.pop(index, None)
        progress.files.update(progress.report(complete=False, stopped=False))
        _say(console, result_line(r, index + 1, total, plan, repeat))
        for line in artifact_lines(r):
            _say(console, line)
        show_running()

    def on_start(index: int, loaded: LoadedScenario, opts: RunOptions) -> None:
        progress.running[index] = (loaded, opts, time.monotonic())
        show_running()

    async def run() -> RunReport:
        return await run_scenarios(
            scenarios,
            ctx,
            options,
            on_start,
            on_result,
            plan_only=plan,
            matrix=matrix,
            repeat=repeat,
            jobs=jobs,
            memory_budget=budget,
            durations=durations,
        )

    if status is None:
        return await run()
    with status:
        return await run()


def _durations(path: Path | None) -> Durations | None:
    """``--durations``: the file's history; None for ``none``."""
    from qmpgmem.durations import Durations, default_path

    if path is not None and str(path) == "none":
        return None
    return Durations.load(path or default_path())


async def _cancellable(main: Coroutine[Any, Any, RunReport]) -> RunReport:
    """Run the main coroutine so that SIGINT, SIGTERM and SIGHUP cancel it, once: a second
    signal while VMs are being stopped is recorded and ignored, so teardown completes.

    Why plain ``signal.signal`` and not the loop's ``add_signal_handler``: removing a loop
    handler resets the signal to SIG_DFL before ours is back, and a second SIGTERM in that
    gap killed the process mid-teardown (the signal storm found it). Swapping one Python
    handler for another leaves no gap; the handler runs in the main thread, whose selector
    wait it interrupts, and hands the cancel to the loop."""
    import signal

    from qmpgmem.cli.entry import INTERRUPTING, first_signal, install_handlers, note_signal

    task = asyncio.ensure_future(main)
    loop = asyncio.get_running_loop()

    def cancel(signum: int, _frame: object) -> None:
        if note_signal(signal.Signals(signum).name):
            loop.call_soon_threadsafe(task.cancel)

    if first_signal() is not None:  # a signal came before the loop took over
        task.cancel()
    for sig in INTERRUPTING:
        signal.signal(sig, cancel)
    try:
        return await task
    finally:
        install_handlers()  # what remains (reports, summary) is interrupted like the rest


class _Size(click.ParamType[int]):
    """A size as scenario files spell it (``512M``, ``2G``, ``0x1000``)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from qmpgmem.scenario.units import parse_size

        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _budget_help() -> str:
    from qmpgmem.scheduler import BUDGET_FRACTION

    return (
        "VM memory the runs in progress may hold together (each run needs its guest's 4 MiB "
        "plus its regions); a run larger than the budget still runs, alone. Default: "
        f"{BUDGET_FRACTION:.0%} of MemAvailable at the start."
    )


def _baseline(expect_skips: Path | None) -> ExpectedSkips:
    return ExpectedSkips.load(expect_skips) if expect_skips else ExpectedSkips()


def _host_class(ctx: HostContext | None) -> str:
    if ctx is None:
        return ""
    qemus = ", ".join(f"QEMU {v or '?'}" for v in ctx.qemu_versions.values())
    return f"{ctx.kvm_backend or 'no KVM'}, kernel {ctx.kernel_release}" + (
        f", {qemus}" if qemus else ""
    )


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
    "scenario runs with the first that meets its requirements (with --matrix: on each).",
)
@click.option(
    "--matrix",
    is_flag=True,
    help="Run every scenario on every --qemu binary (a binary that does not meet the "
    "scenario's requirements gives a skip saying why); each result names its binary and "
    "version. The kvm engine has no binary axis.",
)
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    metavar="N",
    help="Run each scenario (on each engine and binary) N times; one result each: its "
    "status when all runs agree, else flaky, with every run's status and the min/median/"
    "max time.",
)
@click.option(
    "--accel",
    type=click.Choice(["kvm", "tcg", "auto"]),
    default=None,
    help="Override the scenarios' vm.accel (auto: kvm when /dev/kvm works, else TCG, and the "
    "header and each line say so).",
)
@click.option(
    "-k",
    "keyword",
    metavar="SUBSTRING",
    help="Only scenarios whose name or path contains SUBSTRING.",
)
@click.option(
    "-m",
    "tag_expr",
    metavar="EXPR",
    help="Only scenarios whose tags match EXPR, pytest's -m grammar: "
    "'smoke', 'conversion and not smp', '(kernel or basic) and not large'.",
)
@click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    help="Write the JSON report here ('-': stdout, the human output then goes to stderr).",
)
@click.option(
    "--junit",
    "junit_path",
    type=click.Path(path_type=Path),
    help="Write a JUnit XML report here (junit-10.xsd; '-': stdout).",
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
    "-j",
    "--jobs",
    "jobs",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Run up to N scenarios at once (default: the cores this process may use; -j 1: one "
    "after another). With N above 1 the runs that took longest last time start first "
    "(--durations). Lines are printed as runs finish, numbered in plan order; reports and "
    "the summary keep the plan's order.",
)
@click.option(
    "--durations",
    "durations_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="QMPGMEM_DURATIONS",
    metavar="FILE",
    help="Where each run's time is kept for the next -j run to start the longest first "
    "(default: ~/.cache/qmpgmem/durations.json; 'none': neither read nor written). Env: "
    "QMPGMEM_DURATIONS.",
)
@click.option(
    "--memory-budget", "budget", type=_Size(), default=None, metavar="SIZE", help=_budget_help()
)
@click.option(
    "--plan",
    is_flag=True,
    help="Boot no guest: print for each scenario and engine whether it would run here or why "
    "it would be skipped (the same decision a run makes).",
)
@click.option(
    "--strict",
    is_flag=True,
    envvar="QMPGMEM_STRICT",
    help="Fail the run when anything skips that --expect-skips does not expect (no file: any "
    "skip), or runs on TCG because KVM is unusable. Env: QMPGMEM_STRICT=1.",
)
@click.option(
    "--expect-skips",
    "expect_skips",
    type=click.Path(path_type=Path, dir_okay=False),
    envvar="QMPGMEM_EXPECT_SKIPS",
    metavar="FILE",
    help="The host class's expected skips (scenario, engine, reason glob), for --strict. "
    "Env: QMPGMEM_EXPECT_SKIPS.",
)
@click.option(
    "--allow-unsafe",
    is_flag=True,
    help="Let scenarios use QMP commands that run programs or write host files, and raw "
    "qemu_args (a scenario file is then code; docs/security.md). Recorded in the reports.",
)
@click.option(
    "--write-expected-skips",
    "write_skips",
    type=click.Path(path_type=Path, dir_okay=False),
    metavar="FILE",
    help="Write this run's skips as an expected-skips file, to review and keep per host class.",
)
def run(
    paths: tuple[Path, ...],
    engines: tuple[str, ...],
    qemu: tuple[str, ...],
    matrix: bool,
    repeat: int,
    accel: str | None,
    keyword: str | None,
    tag_expr: str | None,
    json_path: Path | None,
    junit_path: Path | None,
    artifacts: Path,
    keep_run_dirs: bool,
    jobs: int | None,
    durations_path: Path | None,
    budget: int | None,
    plan: bool,
    strict: bool,
    expect_skips: Path | None,
    allow_unsafe: bool,
    write_skips: Path | None,
) -> None:
    """Run scenarios (files or directories; default: ./scenarios, else the library installed
    with qmpgmem) on the built-in micro guest.

    Each scenario ends passed, failed (an expectation did not hold), error (the VM or the
    harness broke), timeout, or skipped (this host lacks something; the reason says what);
    with --repeat, flaky when its runs ended differently (a failure of the run).
    Exit status: 0 when everything passed or was skipped, 1 when anything failed, errored or
    timed out (or, with --strict, skipped unexpectedly or fell back to TCG), 2 for invalid
    scenario files or options, 130 when interrupted (every VM is stopped first; the reports
    asked for list what finished), 141 when stdout was closed.

    \b
    Examples:
      qmpgmem run scenarios/basic
      qmpgmem run scenarios/ --accel tcg --junit build/junit.xml
      qmpgmem run --engine kvm scenarios/kernel
      qmpgmem run scenarios/ -m 'conversion and not smp' --json report.json
      qmpgmem run scenarios/ --engine qemu --engine kvm --plan
      qmpgmem run scenarios/ --qemu qemu-system-x86_64 --qemu ./qemu-11 --matrix
      qmpgmem run scenarios/basic --repeat 5 --json repeats.json
      qmpgmem run scenarios/ --engine qemu --engine kvm -j 2 --memory-budget 2G
    \b
    A host-image gate (docs/ci.md):
      qmpgmem run scenarios/ --engine qemu --engine kvm --write-expected-skips host-class.yaml
      qmpgmem run scenarios/ --engine qemu --engine kvm --strict --expect-skips host-class.yaml
    """
    try:
        tags = TagExpression.parse(tag_expr) if tag_expr is not None else None
    except TagExpressionError as exc:
        click.echo(f"-m {tag_expr!r}: {exc}", err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from None
    try:
        files = ReportFiles(json_path, junit_path)
    except ValueError as exc:
        click.echo(str(exc), err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from None
    baseline = _baseline(expect_skips)  # a bad file is a usage error, before any VM starts
    loaded, issues = load_paths(
        paths or default_paths(), requirement_check=check_requirement_syntax
    )
    if issues:
        for issue in issues:
            click.echo(str(issue), err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
    selected = _select(loaded, keyword, tags)
    if not selected:
        wanted = " and ".join(
            w for w in (keyword and f"-k {keyword!r}", tag_expr and f"-m {tag_expr!r}") if w
        )
        click.echo(f"no scenario matches {wanted}" if wanted else "no scenarios found", err=True)
        raise click.exceptions.Exit(EXIT_USAGE)
    options = [
        RunOptions(
            engine=e,
            accel=accel,
            artifacts_dir=artifacts,
            keep_run_dirs=keep_run_dirs,
            allow_unsafe=allow_unsafe,
        )
        for e in (engines or ("qemu",))
    ]
    human = sys.stderr if files.uses_stdout else sys.stdout
    console = _Console(
        file=human, highlight=False, soft_wrap=True, width=None if human.isatty() else 160
    )
    progress = Progress(
        files=files, engines=",".join(o.engine for o in options), allow_unsafe=allow_unsafe
    )
    from qmpgmem.scheduler import default_budget, default_jobs

    main = _run(
        selected,
        options,
        qemu,
        console,
        progress,
        plan,
        matrix=matrix,
        repeat=repeat,
        jobs=jobs or default_jobs(),
        budget=budget if budget is not None else default_budget(),
        durations=_durations(durations_path),
    )
    try:
        report = asyncio.run(_cancellable(main))
    except (KeyboardInterrupt, asyncio.CancelledError):
        from qmpgmem.cli.entry import exit_interrupted

        files.finish(progress.report(complete=False))
        exit_interrupted(f"all VMs were stopped; {len(progress.results)} result(s) finished")
    except StdoutClosed:
        progress.stopped_by = "stdout closed"
        files.finish(progress.report(complete=False))
        sys.exit(EXIT_STDOUT_CLOSED)
    report.allow_unsafe = allow_unsafe
    if strict and not plan:
        from qmpgmem.report.gate import judge

        report.gate = judge(
            report.results, baseline, progress.ctx.kvm_unusable if progress.ctx else ""
        )
    try:
        print_summary(console, report, plan)
        if write_skips:
            n = write_expected_skips(
                report.results,
                write_skips,
                _host_class(progress.ctx),
                header=f"expected skips written by qmpgmem run on {os.uname().nodename}; "
                "review, then run with --strict --expect-skips this file",
            )
            console.print(f"wrote {n} expected skip(s) to {write_skips}", highlight=False)
    except StdoutClosed:
        pass  # the reports below still get written
    except KeyboardInterrupt:  # a signal after the last result: the run itself is complete
        from qmpgmem.cli.entry import exit_interrupted

        files.finish(report)
        exit_interrupted(f"after the last result; {len(report.results)} result(s) finished")
    files.finish(report)
    raise click.exceptions.Exit(EXIT_OK if report.ok else EXIT_FAILED)
