"""What ``qmpgmem run`` prints: the header, one line per result, the closing summary.

Why apart from the command: the lines are the tool's face in a CI log, so their wording lives in
one place — each names engine and accelerator (``[qemu/kvm]``, ``[qemu/tcg]``, ``[kvm/kvm]``);
the header says once, in full, why ``auto`` fell back to TCG; the summary counts per engine and
repeats only what did not pass, with full reasons, so the end of a long log says what broke.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from qmpgmem.report.result import Gate, RunReport, ScenarioResult, Status, binary_label
from qmpgmem.runner import HostContext, RunOptions
from qmpgmem.sanitize import printable

__all__ = [
    "STYLE",
    "accelerator_line",
    "artifact_lines",
    "header_line",
    "print_summary",
    "result_line",
]

STYLE = {
    Status.PASSED: "green",
    Status.FAILED: "bold red",
    Status.ERROR: "bold magenta",
    Status.TIMEOUT: "bold yellow",
    Status.SKIPPED: "cyan",
    Status.FLAKY: "bold red",
    Status.WOULD_RUN: "green",
    Status.WOULD_SKIP: "cyan",
}
_COLUMNS = (Status.PASSED, Status.FAILED, Status.ERROR, Status.TIMEOUT, Status.SKIPPED)
_PLAN_COLUMNS = (Status.WOULD_RUN, Status.WOULD_SKIP, Status.ERROR)


def _text(text: str) -> str:
    """Scenario-derived text for the console: control characters escaped visibly (an
    escape sequence in a name must not rewrite the line), markup escaped."""
    return escape(printable(text))


def header_line(scenarios: int, options: Sequence[RunOptions], ctx: HostContext) -> str:
    qemus = ", ".join(f"{v or '?'} ({b})" for b, v in ctx.qemu_versions.items()) or "absent"
    return (
        f"[bold]qmpgmem[/] {scenarios} scenario(s) on engine "
        f"{' and '.join(o.engine for o in options)}; "
        + escape(
            f"kernel {ctx.kernel_release}, KVM backend {ctx.kvm_backend or 'none'}, QEMU {qemus}"
        )
    )


def accelerator_line(options: Sequence[RunOptions], ctx: HostContext) -> str:
    """Which accelerator the runs get, and why when it is not KVM."""
    forced = {o.accel for o in options if o.accel}
    if ctx.kvm_usable:
        if forced == {"tcg"}:
            return "accelerator: TCG (--accel tcg); kvm-engine runs, where asked for, skip"
        return f"accelerator: KVM (/dev/kvm served by {ctx.kvm_backend or 'an unknown module'})"
    why = escape(ctx.kvm_unusable or "/dev/kvm is not usable")
    return (
        f"[bold yellow]accelerator: KVM unusable[/] — {why}: QEMU runs with accel auto use "
        "TCG; kvm-engine and accel kvm runs skip"
    )


def binary_text(r: ScenarioResult) -> str:
    """ " QEMU 10.0.2 qemu-system-x86_64": the binary a qemu-engine result ran with."""
    return f" QEMU {r.qemu_version or '?'} {binary_label(r.qemu)}" if r.qemu else ""


def result_line(
    r: ScenarioResult, count: int, total: int, plan: bool, repeat: int = 1
) -> str:
    """One run's line: status, scenario, engine/accelerator, the QEMU binary and its version,
    time and checks (and which run of a ``--repeat``), the reason when it did not pass."""
    width = len(str(total))
    label = r.status.value.upper()
    line = f"[{count:>{width}}/{total}] [{STYLE[r.status]}]{label:{10 if plan else 7}}[/] "
    checks = [st for st in r.steps if st.expected is not None]
    computed = sum(1 for st in checks if st.computed)
    detail = f"{r.duration_s:.2f}s"
    if checks:
        detail += f", {len(checks)} checks" + (f", {computed} by the model" if computed else "")
    if r.repeat_index is not None:
        detail += f", run {r.repeat_index + 1}/{repeat}"
    fallback = ", fallback" if r.accel_note else ""
    line += _text(
        f"{r.scenario} [{r.engine}/{r.accel or '?'}{fallback}]{binary_text(r)} ({detail})"
    )
    if r.status not in (Status.PASSED, Status.WOULD_RUN):
        line += f" — {_text(r.reason)}"
    for warning in r.warnings:
        line += f"\n      [yellow]warning:[/] {_text(warning)}"
    return line


def artifact_lines(r: ScenarioResult) -> list[str]:
    if not r.artifacts:
        return []
    return [
        _text(f"      artifacts: {r.artifacts}"),
        _text(f"      reproduce: {r.reproduce}"),
    ]


def _counts_table(report: RunReport, plan: bool) -> Table:
    columns = _PLAN_COLUMNS if plan else _COLUMNS
    if any(r.status is Status.FLAKY for r in report.results):
        columns = (*columns[:-1], Status.FLAKY, columns[-1])
    table = Table(title="qmpgmem plan" if plan else "qmpgmem run", title_justify="left")
    table.add_column("engine", no_wrap=True)
    for status in columns:
        table.add_column(str(status), justify="right", no_wrap=True)
    engines = list(dict.fromkeys(r.engine for r in report.results))
    for engine in engines:
        mine = [r for r in report.results if r.engine == engine]
        table.add_row(
            engine,
            *(
                f"[{STYLE[s]}]{n}[/]" if (n := sum(r.status is s for r in mine)) else "0"
                for s in columns
            ),
        )
    return table


def _gate_lines(gate: Gate) -> list[str]:
    style = "green" if gate.passed else "bold red"
    out = [f"[{style}]{_text(gate.verdict)}[/]"]
    out += [_text(f"  {v.scenario} [{v.engine}]: {v.why}") for v in gate.violations]
    out += [_text(f"  expected skip did not happen: {u}") for u in gate.unused_expected_skips]
    return out


def print_summary(console: Console, report: RunReport, plan: bool) -> None:
    console.print(_counts_table(report, plan))
    bad = [r for r in report.results if not r.status.ok]
    if bad:
        console.print(f"[bold]did not pass ({len(bad)}):[/]")
        for r in bad:
            console.print(
                f"  [{STYLE[r.status]}]{r.status.value.upper()}[/] "
                + _text(
                    f"{r.scenario} [{r.engine}/{r.accel or '?'}]{binary_text(r)} — {r.reason}"
                )
            )
            if r.repeats is not None:
                console.print(_text(f"      times: {r.repeats.spread()}"))
            for line in artifact_lines(r):
                console.print(line)
    console.print(report.summary.counts())
    if report.gate is not None:
        for line in _gate_lines(report.gate):
            console.print(line)
