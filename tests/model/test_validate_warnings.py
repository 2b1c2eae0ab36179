"""qmpgmem validate warns where an explicit expectation and the model disagree."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from qmpgmem.cli import cli

TEXT = """\
name: w
description: d
vm:
  memory: [{id: m0, size: 1M}]
steps:
  - action: guest.write
    range: {region: m0, size: 4K}
    seed: 1
  - action: guest.verify
    range: {region: m0, size: 4K}
    expect: {pattern: 2}
"""


def test_disagreement_is_a_warning_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text(TEXT)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0
    assert f"{path}:9: warning: steps[1].expect: expects pattern 2" in result.output
    assert "predicts pattern seed 1" in result.output


def test_agreement_prints_no_warning(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(TEXT.replace("pattern: 2", "pattern: 1"))
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0 and "warning" not in result.output
