"""``qmpgmem validate``: check scenario files without running anything."""

from __future__ import annotations

from pathlib import Path

import click

from qmpgmem.cli.main import EXIT_USAGE, cli
from qmpgmem.host.requirements import check_requirement_syntax
from qmpgmem.library import default_paths
from qmpgmem.model.check import disagreements
from qmpgmem.scenario.loader import load_paths


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


@cli.command(short_help="Check scenario files without running them.")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check scenario files (directories are searched for *.yaml, *.yml, *.json).

    Without PATHS: ./scenarios when it exists, else the scenario library installed with
    qmpgmem.

    Prints every problem as FILE:LINE:COL: field: message and exits 2 if there is one;
    exits 0 when all scenarios are valid. An explicit expectation that the memory model
    predicts differently is printed as a warning (FILE:LINE: warning: ...) and does not
    change the exit status: the run decides which of the two is right.

    \b
    Example:
      qmpgmem validate scenarios/ extra/my-test.yaml
      qmpgmem validate
    """
    loaded, issues = load_paths(
        paths or default_paths(), requirement_check=check_requirement_syntax
    )
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
