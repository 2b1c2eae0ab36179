"""The lab's makes run as top-level makes even when ``make lab`` started us.

Why it matters: the selftests' lib.mk sets OUTPUT only at MAKELEVEL 0; with an outer make's
MAKELEVEL inherited, the test programs were linked without libkvm on a fresh machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from qmpgmem.errors import SetupError
from qmpgmem.lab.build import _run_logged

MAKEFILE = 'all:\n\t@test "$(MAKELEVEL)" = 0 || { echo nested at $(MAKELEVEL); exit 1; }\n'


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if shutil.which("make") is None:
        pytest.skip("needs make")
    (tmp_path / "Makefile").write_text(MAKEFILE)
    return tmp_path


def test_outer_make_variables_do_not_reach_the_build(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAKELEVEL", "1")
    monkeypatch.setenv("MAKEFLAGS", "s -- FOO=1")
    _run_logged(["make"], tree, tree / "build.log", "probe make")


def test_the_probe_makefile_fails_when_nested(tree: Path) -> None:
    with pytest.raises(SetupError, match="nested at 1"):
        _run_logged(["make", "MAKELEVEL=1"], tree, tree / "build.log", "probe make")
