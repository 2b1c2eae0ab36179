"""plans/library.fmf run by tmt on this host (``tmt run --all provision --how local``), from a
copy of the working tree as a clone would hold it (tmt copies the whole tree, and this
checkout's .venv and build/ are half a gigabyte).

The passing run goes through the plan's prepare (a venv from the tree) and the tier's
selection; the failing one holds this host to a class whose baseline expects no skip, and
tmt reports the library test failed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from tests_fleet.conftest import HOST_CLASS, QMPGMEM, SELECT, copy_tree, expected_rows, read_json

TESTS = ("/deploy/tmt/probe", "/deploy/tmt/library")


def tmt_run(tmt: Path, tree: Path, run: Path, *args: str) -> tuple[int, float, str]:
    # tmt's own files (the test pid lock, its config with last-run) beside the run
    env = dict(os.environ, TMT_TEST_PIDFILE_ROOT=str(run.parent / "pidfile"),
               TMT_CONFIG_DIR=str(run.parent / "tmt-config"))  # fmt: skip
    start = time.monotonic()
    res = subprocess.run(
        [str(tmt), "--feeling-safe", "run", "--all", "--id", str(run), *args,
         "provision", "--how", "local"],
        cwd=tree, capture_output=True, text=True, env=env, timeout=1200, check=False,
    )  # fmt: skip
    return res.returncode, time.monotonic() - start, res.stdout + res.stderr


def results(run: Path) -> dict[str, Any]:
    doc = YAML(typ="safe").load(run / "plans" / "library" / "execute" / "results.yaml")
    return {r["name"]: r for r in doc}


def data(run: Path, result: dict[str, Any]) -> Path:
    return run / "plans" / "library" / "execute" / result["data-path"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tree copy; its runs (with a venv each) beside it, all removed at the end."""
    root = tmp_path_factory.mktemp("tmt")
    try:
        tree = copy_tree(root / "tree")
        # tmt reads an environment file only from inside the tree; -e splits at spaces
        (tree / "select.yaml").write_text(f"QMPGMEM_SELECT: {SELECT}\n")
        yield tree
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_plan_runs_the_library_locally(tmt: Path, tree: Path) -> None:
    run = tree.parent / "passing"
    rc, seconds, out = tmt_run(
        tmt, tree, run, "--environment-file", "select.yaml",
        "-e", f"QMPGMEM_HOST_CLASS={HOST_CLASS}",
    )  # fmt: skip
    assert rc == 0, out[-4000:]
    found = results(run)
    assert set(found) == set(TESTS)
    assert all(r["result"] == "pass" for r in found.values()), found
    report = read_json(data(run, found["/deploy/tmt/library"]) / "run.json")
    assert report["gate"]["passed"], report["gate"]["verdict"]
    assert Path(report["gate"]["baseline"]).name == f"{HOST_CLASS}.yaml"
    assert {(r["scenario"], r["engine"]) for r in report["results"]} == expected_rows()
    assert (data(run, found["/deploy/tmt/library"]) / "run.xml").exists()
    probe = read_json(data(run, found["/deploy/tmt/probe"]) / "probe.json")
    assert probe["kind"] == "probe"
    # prepare installed qmpgmem from the tree into the plan's data, not the checkout's venv
    assert (run / "plans" / "library" / "data" / "venv" / "bin" / "qmpgmem").exists()
    print(f"tmt run with prepare (fresh venv): {seconds:.1f}s")


def test_a_baseline_that_misses_a_skip_fails_the_library_test(tmt: Path, tree: Path) -> None:
    classes = tree / "deploy" / "classes"
    (classes / "no-skips.yaml").write_text("schema_version: 1\nexpected_skips: []\n")
    run = tree.parent / "failing"
    rc, _, out = tmt_run(
        tmt, tree, run, "--environment-file", "select.yaml",
        "-e", "QMPGMEM_HOST_CLASS=no-skips", "-e", f"QMPGMEM={QMPGMEM}",
    )  # fmt: skip
    assert rc == 1, out[-4000:]
    found = results(run)
    assert found["/deploy/tmt/probe"]["result"] == "pass"
    assert found["/deploy/tmt/library"]["result"] == "fail"
    report = read_json(data(run, found["/deploy/tmt/library"]) / "run.json")
    assert not report["gate"]["passed"]
    assert "unexpected skip" in report["gate"]["verdict"], report["gate"]["verdict"]
    # QMPGMEM given: prepare installed nothing
    assert not (run / "plans" / "library" / "data" / "venv").exists()


def test_the_metadata_passes_tmt_lint(tmt: Path, tree: Path) -> None:
    env = dict(os.environ, TMT_CONFIG_DIR=str(tree.parent / "tmt-config"))
    res = subprocess.run([str(tmt), "lint"], cwd=tree, capture_output=True, text=True,
                         env=env, timeout=300, check=False)  # fmt: skip
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
