"""``qmpgmem schema``: print the JSON Schema of scenario files, for editors and other tools,
or (``--report``) of the JSON reports ``run``, ``probe`` and ``kernel-contract`` write."""

from __future__ import annotations

import json
from pathlib import Path

import click

from qmpgmem.cli.group import cli
from qmpgmem.report.envelope import KINDS, report_json_schema
from qmpgmem.scenario.schema import scenario_json_schema


@cli.command(short_help="Print the JSON Schema of scenario files or of the JSON reports.")
@click.option(
    "--report",
    "report",
    is_flag=False,
    flag_value="all",
    default=None,
    type=click.Choice(["all", *KINDS]),
    metavar="[KIND]",
    help="The schema of the JSON reports instead: of every kind (--report alone, a oneOf on "
    f"'kind'), or of one: {', '.join(KINDS)}.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the schema to this file instead of stdout.",
)
def schema(report: str | None, output: Path | None) -> None:
    """Print the JSON Schema (draft 2020-12) of a scenario file, or with --report of the
    JSON reports (schema_version 1: run, probe, kernel-contract and the lab's reports).

    \b
    Example, for editors with a YAML language server:
      qmpgmem schema -o scenario.schema.json
      # then in a scenario:  # yaml-language-server: $schema=scenario.schema.json
    \b
    Example, checking a report in CI:
      qmpgmem schema --report -o report.schema.json
      qmpgmem run scenarios/ --json run.json
      check-jsonschema --schemafile report.schema.json run.json
    """
    if report is None:
        doc = scenario_json_schema()
    else:
        doc = report_json_schema(None if report == "all" else report)
    text = json.dumps(doc, indent=2, sort_keys=False) + "\n"
    if output is None:
        click.echo(text, nl=False)
        return
    output.write_text(text, encoding="utf-8")
    click.echo(f"wrote {output}", err=True)
