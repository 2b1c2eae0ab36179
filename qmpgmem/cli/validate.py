"""``qmpgmem validate``: check scenario files without running anything."""

from __future__ import annotations

from pathlib import Path

import click

from qmpgmem.cli.group import EXIT_USAGE, cli
from qmpgmem.host.requirements import check_requirement_syntax
from qmpgmem.library import default_paths
from qmpgmem.model.check import disagreements
from qmpgmem.scenario.loader import LoadedScenario, ScenarioIssue, load_paths


def unsafe_issues(loaded: list[LoadedScenario]) -> list[ScenarioIssue]:
    """What a run would refuse without --allow-unsafe, as issues (qmpgmem/policy.py)."""
    from qmpgmem.policy import OPT_IN, unsafe_uses

    return [
        ScenarioIssue(
            item.path, use.line, None, use.field, f"{use.message}; {OPT_IN}", type="unsafe"
        )
        for item in loaded
        for use in unsafe_uses(item)
    ]


def paused_issues(loaded: list[LoadedScenario]) -> list[ScenarioIssue]:
    """Guest steps while the VM is paused: a run refuses them before the VM starts
    (memory model R24), so validation says so at the step's line."""
    from qmpgmem.model import paused_guest_steps

    return [
        ScenarioIssue(
            item.path,
            item.step_lines[p.step_index] if p.step_index < len(item.step_lines) else None,
            None,
            f"steps[{p.step_index}]",
            p.message,
            type="paused_guest_step",
        )
        for item in loaded
        for p in paused_guest_steps(item.scenario.steps)
    ]


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@cli.command(short_help="Check scenario files without running them.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option(
    "--allow-unsafe",
    is_flag=True,
    help="Accept what a run accepts only with --allow-unsafe (QMP commands that reach the "
    "host, raw qemu_args, files outside the run directory; docs/security.md).",
)
def validate(paths: tuple[Path, ...], allow_unsafe: bool) -> None:
    """Check scenario files (directories are searched for *.yaml, *.yml, *.json).

    Without PATHS: ./scenarios when it exists, else the scenario library installed with
    qmpgmem.

    Prints every problem as FILE:LINE:COL: field: message and exits 2 if there is one;
    exits 0 when all scenarios are valid. An explicit expectation that the memory model
    predicts differently is printed as a warning (FILE:LINE: warning: ...) and does not
    change the exit status: the run decides which of the two is right.

    A scenario file is data: a qmp step that reaches the host, qemu_args beyond -machine
    settings, or a file region outside the run directory is a problem too, unless
    --allow-unsafe (as with run). QMP arguments are judged by name here; a run also judges
    them against its QEMU binary's query-qmp-schema.

    \b
    Example:
      qmpgmem validate scenarios/ extra/my-test.yaml
      qmpgmem validate
    """
    loaded, issues = load_paths(
        paths or default_paths(), requirement_check=check_requirement_syntax
    )
    paused = paused_issues(loaded)
    issues = issues + paused
    loaded = [item for item in loaded if item.path not in {issue.file for issue in paused}]
    if not allow_unsafe:
        unsafe = unsafe_issues(loaded)
        issues = issues + unsafe
        refused = {issue.file for issue in unsafe}
        loaded = [item for item in loaded if item.path not in refused]
    for issue in issues:
        click.echo(str(issue))
    for item in loaded:
        for d in disagreements(item.scenario):
            line = item.step_lines[d.step_index] if d.step_index < len(item.step_lines) else 0
            click.echo(f"{item.path}:{line}: warning: steps[{d.step_index}].expect: {d.message}")
    if issues:
        bad_files = len({issue.file for issue in issues})
        click.echo(
            f"{_plural(len(issues), 'problem')} in {_plural(bad_files, 'file')}; "
            f"{_plural(len(loaded), 'scenario')} valid",
            err=True,
        )
        raise click.exceptions.Exit(EXIT_USAGE)
    click.echo(f"{_plural(len(loaded), 'scenario')} valid")
