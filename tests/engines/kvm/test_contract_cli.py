"""qmpgmem kernel-contract: the checks from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from qmpgmem.cli import cli

from .helpers import needs_kvm

pytestmark = needs_kvm


def test_all_checks_run_and_none_fails_here(tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    result = CliRunner().invoke(cli, ["kernel-contract", "--json", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["schema_version"] == 1 and doc["kind"] == "kernel-contract"
    assert doc["host"]["kvm_backend"] == records_backend(doc)
    records = doc["checks"]
    assert len(records) >= 25
    assert doc["counts"] == {o: sum(r["outcome"] == o for r in records) for o in doc["counts"]}
    assert {r["outcome"] for r in records} <= {"passed", "deviation", "skipped"}
    # a deviation always names the backend and why; a skip says what is missing
    assert all(r["detail"] for r in records if r["outcome"] in ("deviation", "skipped"))


def records_backend(doc: dict[str, Any]) -> str:
    (backend,) = {r["backend"] for r in doc["checks"]}
    return str(backend)


def test_json_to_stdout_leaves_the_table_to_stderr() -> None:
    result = CliRunner().invoke(cli, ["kernel-contract", "create.flags", "--json", "-"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [c["name"] for c in doc["checks"]] == ["create.flags"]
    assert "guest_memfd kernel contract" in result.stderr


def test_unknown_check_name_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["kernel-contract", "no.such.check"])
    assert result.exit_code == 2 and "no.such.check" in result.output
