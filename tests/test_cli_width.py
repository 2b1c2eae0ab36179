"""Piped output is readable at 80 columns.

The commands run as a user pipes them (``qmpgmem probe | less``, a CI log): stdout a pipe,
no terminal, and ``COLUMNS`` either unset (rich then lays out 80 columns) or set to 80.
"Readable" means, precisely:

1. Tables: every row is one line. In a table's body no line is a *continuation*: a line whose
   first cell is blank, which is how a row whose cells wrapped goes on under the one before.
2. Tables: no cell is split. Each cell's whole text, as the command's JSON document gives it,
   is the cell on its row's line (probe: each fact's name and source, each flavour's
   refusal; kernel-contract: each check's name, outcome and detail or expectation).
3. Line output (``validate``): every problem is one line, the loader's own
   ``FILE:LINE:COL: field: message`` text, whole.
4. JSON (``schema``): the output parses and is the schema the models give; a wrapped string
   would not parse.

The tables use rich's box characters; the child runs with UTF-8 output, so the column
separator "│" never occurs in a cell. ``test_the_check_fails_on_wrapped_tables`` shows the
check failing on the old behaviour: the same tables rendered as rich does at 80 columns.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from qmpgmem.report.envelope import KINDS, report_json_schema
from qmpgmem.scenario.loader import load_paths
from qmpgmem.scenario.schema import scenario_json_schema

ROOT = Path(__file__).resolve().parents[1]
SEP = "│"  # the body's column separator (the header's is "┃")


def piped(
    *args: str, columns: str | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    """``qmpgmem ARGS`` with stdout and stderr pipes, no terminal, COLUMNS unset or given."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env["PYTHONIOENCODING"] = "utf-8"
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run(
        [sys.executable, "-m", "qmpgmem.cli", *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, cwd=cwd, env=env,
        timeout=180, check=False,
    )  # fmt: skip


def body_rows(text: str) -> list[list[str]]:
    """The cells of every table body line (with or without the table's outer edge)."""
    rows = []
    for line in text.splitlines():
        if SEP not in line:
            continue
        inner = line.strip()
        inner = inner.removeprefix(SEP).removesuffix(SEP)
        rows.append([cell.strip() for cell in inner.split(SEP)])
    return rows


def continuations(text: str) -> list[str]:
    """Rule 1: body lines whose first cell is blank (a wrapped row's second and later lines)."""
    return [SEP.join(row) for row in body_rows(text) if not row[0]]


def split_cells(text: str, expected: Iterable[Sequence[str]]) -> list[tuple[str, ...]]:
    """Rule 2: the expected rows (leading cells; None-free) not found whole on one line."""
    rows = body_rows(text)
    return [
        tuple(want) for want in expected if not any(row[: len(want)] == list(want) for row in rows)
    ]


def assert_readable(text: str, expected: Iterable[Sequence[str]]) -> None:
    assert body_rows(text), "no table in the output"
    assert not continuations(text), continuations(text)[:5]
    missing = split_cells(text, expected)
    assert not missing, missing[:5]


def _value(value: Any) -> str:
    """A fact's value as the probe table shows it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "(none)"
    return str(value)


@pytest.fixture(scope="module")
def probe_doc() -> dict[str, Any]:
    done = piped("probe", "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def probe_rows(doc: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = [(f["name"], _value(f["value"]), f["source"]) for f in doc["facts"]]
    for plans in doc["flavours"].values():
        for name, plan in plans.items():
            if not plan["usable"]:
                rows.append((name, "no", plan["skip_reason"]))
            else:
                rows.append((name, "yes"))
    return rows


@pytest.mark.usefixtures("qemu_binary", "kvm_available")
@pytest.mark.parametrize("columns", [None, "80"], ids=["no-COLUMNS", "COLUMNS=80"])
def test_probe(probe_doc: dict[str, Any], columns: str | None) -> None:
    done = piped("probe", columns=columns)
    assert done.returncode == 0, done.stderr
    rows = probe_rows(probe_doc)
    assert max(len(r[-1]) for r in rows) > 80  # the check means something: long cells exist
    assert_readable(done.stdout, rows)


@pytest.mark.usefixtures("kvm_available")
@pytest.mark.parametrize("columns", [None, "80"], ids=["no-COLUMNS", "COLUMNS=80"])
def test_kernel_contract(tmp_path: Path, columns: str | None) -> None:
    done = piped("kernel-contract", "--json", str(tmp_path / "c.json"), columns=columns)
    assert done.returncode == 0, done.stdout + done.stderr
    checks = json.loads((tmp_path / "c.json").read_text())["checks"]
    rows = [(c["name"], c["outcome"], c["detail"] or c["expectation"]) for c in checks]
    assert max(len(r[2]) for r in rows) > 80
    assert_readable(done.stdout, rows)

@pytest.mark.usefixtures("qemu_binary")
@pytest.mark.parametrize("columns", [None, "80"], ids=["no-COLUMNS", "COLUMNS=80"])
def test_run(tmp_path: Path, columns: str | None) -> None:
    """Each result is one line holding its whole reason; the per-engine counts table is
    readable; the closing list repeats what did not pass, whole."""
    lib = ROOT / "scenarios/basic"
    done = piped(
        "run", str(lib / "smoke.yaml"), str(lib / "host-write.yaml"),
        "--json", str(tmp_path / "r.json"), columns=columns,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "r.json").read_text())["results"]
    skipped = next(r for r in results if r["status"] == "skipped")
    assert len(skipped["reason"]) > 80  # the check means something: a long reason
    lines = done.stdout.splitlines()
    for r in results:
        whole = f"{r['scenario']} [{r['engine']}/{r['accel']}]"
        line = next(line for line in lines if whole in line)
        assert line.startswith("[") and r["reason"] in line, line
    assert_readable(done.stdout, [("qemu", "1", "0", "0", "0", "1")])



def test_validate(tmp_path: Path) -> None:
    bad = tmp_path / ("a-directory-with-a-long-name-" * 3) / "broken.yaml"
    bad.parent.mkdir()
    bad.write_text(
        "name: broken\ndescription: d\n"
        "vm:\n  machine: microvm\n  memory:\n    - {id: m0, size: 16M, backend: floppy-disk}\n"
        "steps:\n  - action: guest.write\n    range: {region: nowhere, offset: 0, size: 4K}\n"
        "    seed: 1\n    an_unknown_field_with_a_rather_long_name_that_is_not_allowed: 1\n"
    )
    from qmpgmem.host.requirements import check_requirement_syntax

    _, issues = load_paths([bad], requirement_check=check_requirement_syntax)
    assert issues and max(len(str(i)) for i in issues) > 80
    done = piped("validate", str(bad), columns="80")
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines == [str(issue) for issue in issues]  # rule 3: one whole line per problem


@pytest.mark.parametrize("kind", [None, "all", *KINDS])
def test_schema(kind: str | None) -> None:
    args = ["schema"] if kind is None else ["schema", "--report", kind]
    done = piped(*args, columns="80")
    assert done.returncode == 0, done.stderr
    want = (
        scenario_json_schema()
        if kind is None
        else report_json_schema(None if kind == "all" else kind)
    )
    assert json.loads(done.stdout) == json.loads(json.dumps(want))  # rule 4


def _old_render(table: Table) -> str:
    """What probe and kernel-contract printed before: rich at 80 columns, as when piped."""
    out = io.StringIO()
    Console(file=out, width=80, highlight=False).print(table)
    return out.getvalue()


@pytest.mark.usefixtures("kvm_available")
def test_the_check_fails_on_wrapped_tables() -> None:
    from qmpgmem.cli.probe import _fact_table
    from qmpgmem.host.kernel import probe_kvm

    facts = probe_kvm().facts()
    old = _old_render(_fact_table("kernel and KVM", facts))
    rows = [(f.name, _value(f.value), f.source) for f in facts]
    assert continuations(old), "the old 80-column table wraps its source column"
    assert split_cells(old, rows)
    with pytest.raises(AssertionError):
        assert_readable(old, rows)

    # a synthetic table: one long cell, folded at 80 columns, is caught by both rules
    table = Table()
    table.add_column("check", no_wrap=True)
    table.add_column("detail", overflow="fold")
    detail = "a detail that is much longer than the eighty columns rich lays out when piped " * 2
    table.add_row("one.check", detail)
    old = _old_render(table)
    assert continuations(old) and split_cells(old, [("one.check", detail.strip())])
