"""``qmpgmem schema``: print the JSON Schema of scenario files, for editors and other tools."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qmpgmem.cli.main import cli
from qmpgmem.scenario.schema import scenario_json_schema


@cli.command(short_help="Print the JSON Schema of scenario files.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the schema to this file instead of stdout.",
)
def schema(output: Path | None) -> None:
    """Print the JSON Schema (draft 2020-12) of a scenario file.

    \b
    Example, for editors with a YAML language server:
      qmpgmem schema -o scenario.schema.json
      # then in a scenario:  # yaml-language-server: $schema=scenario.schema.json
    """
    text = json.dumps(scenario_json_schema(), indent=2, sort_keys=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)
