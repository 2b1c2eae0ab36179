"""``qmpgmem fuzz``: random scenarios against the memory model; a mismatch is shrunk to YAML.

Exit codes: 0 every scenario matched the model, 1 a mismatch (or a run that broke), 2 bad
input or a host that cannot run the engine at all.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click
from rich.console import Console

from qmpgmem.cli.group import EXIT_FAILED, EXIT_OK, cli
from qmpgmem.cli.run import STYLE
from qmpgmem.fuzz.campaign import DEFAULT_OUT, CaseResult, FuzzOptions, FuzzReport, run_fuzz
from qmpgmem.fuzz.generate import DEFAULT_STEPS
from qmpgmem.fuzz.shrink import DEFAULT_MAX_RUNS
from qmpgmem.fuzz.target import FuzzTarget, fuzz_target
from qmpgmem.report.result import Status
from qmpgmem.scenario.model import Scenario
from qmpgmem.scenario.units import format_size


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


async def _fuzz(
    options: FuzzOptions, engine: str, accel: str | None, console: Console
) -> FuzzReport:
    from qmpgmem.session import host_context

    ctx = await host_context(options.qemu)
    target = fuzz_target(engine, ctx, accel)
    _print_target(console, target, options, ctx.kernel_release)
    width = len(str(options.count))

    def on_case(case: CaseResult) -> None:
        r = case.result
        word = "MATCH" if r.status is Status.PASSED else "MISMATCH"
        if r.status not in (Status.PASSED, Status.FAILED):
            word = r.status.value.upper()
        style = STYLE[r.status]
        line = (
            f"[{case.index:>{width}}/{options.count}] [{style}]{word:8}[/] {r.scenario} "
            f"{_plural(len(case.scenario.steps), 'step')}, {_plural(case.checks, 'check')} "
            f"({case.computed} by the model) {r.duration_s:.2f}s"
        )
        if r.status is not Status.PASSED:
            line += f" — {r.reason}"
        console.print(line)

    def on_shrink(candidate: Scenario) -> None:
        ranged = sum(s.range.size for s in candidate.steps if hasattr(s, "range"))
        memory = sum(r.size for r in candidate.vm.memory)
        console.print(
            f"      shrinking: {_plural(len(candidate.steps), 'step')} over "
            f"{_plural(ranged, 'byte')}, {format_size(memory)} of memory: still failing"
        )

    return await run_fuzz(options, target, on_case, on_shrink)


def _print_target(console: Console, target: FuzzTarget, options: FuzzOptions, kernel: str) -> None:
    host = target.host
    qemu = host.qemu_version or "absent"
    console.print(
        f"[bold]qmpgmem fuzz[/] seed {options.seed}: {options.count} scenario(s) of "
        f"{options.steps} steps on engine {target.engine} (accel {target.accel}); kernel "
        f"{kernel}, KVM backend {host.kvm_backend or 'none'}, QEMU {qemu}"
    )
    console.print(
        "  steps: "
        + ", ".join(sorted(target.actions))
        + "; VMs: "
        + ", ".join(v.name for v in target.variants)
    )
    for what, why in target.left_out:
        console.print(f"  left out {what}: {why}")


def _print_mismatch(console: Console, report: FuzzReport) -> None:
    m = report.mismatch
    assert m is not None
    console.print(f"[bold red]mismatch[/] in {m.case.scenario.name}: {m.failure.describe()}")
    if m.failure.expected is not None:
        console.print(f"  expected {m.failure.expected}; seen {m.failure.seen}")
    console.print(f"  original ({len(m.case.scenario.steps)} steps): {m.original_path}")
    budget = " (the shrink budget ran out)" if m.shrink_exhausted else ""
    console.print(
        f"  shrunk to {len(m.shrunk.steps)} step(s) in {m.shrink_runs} runs{budget}: "
        f"{m.shrunk_path}"
    )
    if m.shrunk_failure is not None:
        console.print(f"  the shrunk scenario: {m.shrunk_failure.describe()}")
    if not m.reproduced:
        console.print(
            "  [bold yellow]warning[/]: the confirming run of the shrunk file did not fail "
            "the same way; the fault may be intermittent"
        )
    console.print(f"reproduce: {m.reproduce}")


@cli.command(short_help="Run seeded random scenarios; shrink the first mismatch to YAML.")
@click.option("--seed", type=click.IntRange(min=0), required=True, help="Seed of the run.")
@click.option(
    "--count", type=click.IntRange(min=1), default=50, show_default=True, help="Scenarios."
)
@click.option(
    "--engine",
    type=click.Choice(["qemu", "kvm"]),
    default="qemu",
    show_default=True,
    help="qemu: QEMU over QMP; kvm: the direct KVM engine with real guest_memfd.",
)
@click.option(
    "--accel",
    type=click.Choice(["kvm", "tcg", "auto"]),
    default=None,
    help="QEMU accelerator (default auto: kvm when /dev/kvm works); the kvm engine is KVM.",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1, max=1000),
    default=DEFAULT_STEPS,
    show_default=True,
    help="Steps per scenario.",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_OUT,
    show_default=True,
    help="Where a mismatching scenario, its shrunk form and their run files go.",
)
@click.option(
    "--qemu",
    "qemu",
    metavar="BIN",
    multiple=True,
    help="QEMU binary (default: qemu-system-x86_64 on PATH).",
)
@click.option(
    "--max-shrink-runs",
    type=click.IntRange(min=0),
    default=DEFAULT_MAX_RUNS,
    show_default=True,
    help="At most this many candidate runs while shrinking.",
)
def fuzz(
    seed: int,
    count: int,
    engine: str,
    accel: str | None,
    steps: int,
    out_dir: Path,
    qemu: tuple[str, ...],
    max_shrink_runs: int,
) -> None:
    """Generate COUNT random scenarios from SEED, run each on its own VM, and check every
    guest.verify and host.read against the memory model (most expectations are the model's).

    The same seed on a host with the same capabilities gives the same scenarios. The first
    scenario that does not pass is shrunk (steps removed, ranges cut, expectations handed to
    the model) to a small one that fails the same way; both are written to --out as YAML
    that ``qmpgmem run`` reproduces, and the command line to do so is printed.

    \b
    Examples:
      qmpgmem fuzz --seed 1 --count 50
      qmpgmem fuzz --seed 3 --count 20 --accel tcg
      qmpgmem fuzz --seed 7 --count 200 --engine kvm --steps 20
    """
    if engine == "kvm" and accel not in (None, "auto", "kvm"):
        raise click.UsageError(f"--accel {accel} is for the qemu engine; the kvm engine is KVM")
    options = FuzzOptions(
        seed=seed,
        count=count,
        steps=steps,
        out_dir=out_dir,
        max_shrink_runs=max_shrink_runs,
        qemu=qemu,
    )
    console = Console(highlight=False, soft_wrap=True)
    try:
        report = asyncio.run(_fuzz(options, engine, accel, console))
    except (KeyboardInterrupt, asyncio.CancelledError):
        click.echo("interrupted: all VMs were stopped", err=True)
        sys.exit(130)
    total_steps = sum(len(c.scenario.steps) for c in report.cases)
    checks = sum(c.checks for c in report.cases)
    computed = sum(c.computed for c in report.cases)
    console.print(
        f"{_plural(len(report.cases), 'scenario')}, {_plural(total_steps, 'step')}, "
        f"{_plural(checks, 'check')} ({computed} computed by the model) in "
        f"{report.duration_s:.1f}s"
    )
    if report.mismatch is not None:
        _print_mismatch(console, report)
        raise click.exceptions.Exit(EXIT_FAILED)
    console.print(f"[green]all {_plural(len(report.cases), 'scenario')} matched the model[/]")
    raise click.exceptions.Exit(EXIT_OK)
