"""The validate and schema commands, through click's runner."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from qmpgmem import __version__
from qmpgmem.cli.entry import main
from qmpgmem.cli.group import cli
from qmpgmem.errors import EngineError, ScenarioError, SetupError
from qmpgmem.library import library_path
from qmpgmem.scenario.schema import scenario_json_schema

REPO = Path(__file__).resolve().parents[2]
BASIC = REPO / "scenarios" / "basic"


def run(*args: str) -> click.testing.Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_teaches_the_workflow() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for line in ("qmpgmem probe", "qmpgmem validate scenarios/", "qmpgmem run scenarios/basic"):
        assert line in result.output
    assert "validate" in result.output and "schema" in result.output


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_validate_shipped_scenarios() -> None:
    count = len(list(BASIC.glob("*.yaml")))
    result = run("validate", str(BASIC))
    assert result.exit_code == 0, result.output
    assert result.output == f"{count} scenarios valid\n"


def test_validate_one_file() -> None:
    result = run("validate", str(BASIC / "smoke.yaml"))
    assert (result.exit_code, result.output) == (0, "1 scenario valid\n")


def test_validate_invalid(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text((BASIC / "smoke.yaml").read_text().replace("size: 16M", "size: 16 apples"))
    result = CliRunner().invoke(cli, ["validate", str(BASIC / "smoke.yaml"), str(bad)])
    assert result.exit_code == 2
    line = next(n for n, t in enumerate(bad.read_text().splitlines(), 1) if "apples" in t)
    assert f"{bad}:{line}:13: vm.memory[0].size: expected a size like 4K" in result.stdout
    assert "1 problem in 1 file; 1 scenario valid" in result.stderr
    assert "Traceback" not in result.output


def test_validate_missing_path(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert f"{tmp_path / 'none.yaml'}: no such file or directory" in result.stdout


def test_validate_without_paths_checks_the_shipped_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./scenarios here
    result = CliRunner().invoke(cli, ["validate"])
    shipped = len(list(library_path().rglob("*.yaml")))
    assert result.exit_code == 0 and result.output.endswith(f"{shipped} scenarios valid\n")


def test_schema_stdout() -> None:
    result = run("schema")
    assert result.exit_code == 0
    assert json.loads(result.output) == scenario_json_schema()


def test_schema_to_file(tmp_path: Path) -> None:
    out = tmp_path / "scenario.schema.json"
    result = run("schema", "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(out.read_text()) == scenario_json_schema()


@pytest.mark.parametrize(
    ("error", "code"),
    [(ScenarioError("bad file"), 2), (SetupError("no qemu"), 2), (EngineError("vm died"), 1)],
)
def test_own_errors_print_clean(error: Exception, code: int) -> None:
    @cli.command("x-raise")
    def _raise() -> None:
        raise error

    try:
        result = CliRunner().invoke(cli, ["x-raise"])
    finally:
        cli.commands.pop("x-raise")
    assert result.exit_code == code
    assert result.stderr == f"error: {error}\n"
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_main_entry_point() -> None:
    """In a child process: main() leaves with os._exit (qmpgmem/cli/entry.py), which would
    end the test session itself, with status 0 and the tests after this one never run."""
    code = f"from qmpgmem.cli.entry import main; main(['validate', {str(BASIC / 'smoke.yaml')!r}])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout) == (0, "1 scenario valid\n"), result.stderr
    assert callable(main)


def test_validate_rejects_an_unknown_requirement_name(tmp_path: Path) -> None:
    """A misspelt capability would skip the scenario on every host: an error instead."""
    bad = tmp_path / "typo.yaml"
    bad.write_text(
        "name: typo\ndescription: d\nrequires: [kvm, guest_memfdd]\n"
        "vm:\n  memory: [{id: m0, size: 4M}]\nsteps:\n  - action: vm.stop\n"
    )
    result = CliRunner().invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:3:" in result.output and "requires[1]" in result.output
    assert "unknown requirement 'guest_memfdd'" in result.output


def test_validate_refuses_a_guest_step_while_paused(tmp_path: Path) -> None:
    """A run refuses it before the VM starts (memory model R24); validate says so too."""
    paused = tmp_path / "paused.yaml"
    paused.write_text(
        "name: paused\ndescription: a verify while paused\n"
        "vm:\n  memory: [{id: m0, size: 4M}]\n"
        "steps:\n  - action: vm.stop\n"
        "  - action: guest.verify\n    range: {region: m0, size: 4K}\n    expect: zero\n"
    )
    result = run("validate", str(paused))
    assert result.exit_code == 2
    assert f"{paused}:7:1: steps[1]: guest.verify needs running vCPUs" in result.stdout
    resumed = tmp_path / "resumed.yaml"
    resumed.write_text(
        paused.read_text().replace("  - action: guest", "  - action: vm.cont\n  - action: guest")
    )
    assert run("validate", str(resumed)).exit_code == 0
