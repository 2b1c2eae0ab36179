"""A wheel that works alone: the scenario library and the micro guest's sources are package
data, found without a checkout (qmpgmem.library, qmpgmem.guest.image).

The slow test builds the wheel from a copy of this working tree, installs it into a fresh
venv and runs a shipped scenario from a directory that is no checkout, the micro guest built
from the packaged sources into a cache under tmp_path.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmpgmem import library
from qmpgmem.errors import SetupError
from qmpgmem.guest import image

REPO = Path(__file__).resolve().parents[1]
#: What the copy of the working tree leaves out: what .gitignore names, and .git.
_NOT_SOURCES = frozenset(
    {
        ".git", ".venv", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache",
        ".pytest_cache", "qmpgmem-artifacts",
    }
)
SUBPROCESS_TIMEOUT = 600


def scenario_files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*.yaml")}


# --- in this checkout -------------------------------------------------------------------


def test_in_a_checkout_the_package_data_is_the_real_tree() -> None:
    """qmpgmem/data/ points at scenarios/ and images/microguest/, which stay where they are."""
    assert library.library_path() == REPO / "scenarios"
    assert image.source_dir() == REPO / "images" / "microguest"
    assert (REPO / "qmpgmem" / "data" / "scenarios").is_symlink()
    assert (REPO / "qmpgmem" / "data" / "microguest").is_symlink()


def test_default_paths_prefer_local_scenarios(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert library.default_paths() == (library.library_path(),)  # no ./scenarios here
    (tmp_path / "scenarios").mkdir()
    assert library.default_paths() == (Path("scenarios"),)  # relative, as reports show it


def test_a_missing_library_is_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(library, "_PACKAGED", tmp_path / "nowhere")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SetupError, match="lacks its package data"):
        library.default_paths()


def test_missing_packaged_sources_say_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(image.SOURCE_ENV, raising=False)
    monkeypatch.setattr(image, "PACKAGED_SOURCES", tmp_path / "nowhere")
    with pytest.raises(SetupError, match="this qmpgmem installation has no sources"):
        image.source_dir()


# --- the built wheel, installed alone ---------------------------------------------------


def _ignore(directory: str, names: list[str]) -> set[str]:
    base = Path(directory)
    return {
        n
        for n in names
        if (n in _NOT_SOURCES or n.endswith(".egg-info")) and (base / n).is_dir()
    }


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without anything that leads back to the checkout."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", image.SOURCE_ENV}
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and not Path(p).is_relative_to(REPO)
    )
    return {**env, **extra}


def _run(argv: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert proc.returncode == 0, (
        f"{' '.join(map(str, argv))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def _results_named(report: Any, name: str) -> Iterator[dict[str, Any]]:
    """Every object in the JSON report that carries a status and names the scenario."""
    if isinstance(report, dict):
        if "status" in report and name in report.values():
            yield report
        for value in report.values():
            yield from _results_named(value, name)
    elif isinstance(report, list):
        for value in report:
            yield from _results_named(value, name)


@pytest.mark.slow
@pytest.mark.qemu
@pytest.mark.usefixtures("qemu_binary")
def test_the_installed_wheel_runs_a_shipped_scenario(tmp_path: Path) -> None:
    timings: dict[str, float] = {}
    start = time.monotonic()
    src = tmp_path / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=_ignore)
    env = _clean_env()
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist"]
    _run([*pip_wheel, src], tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("qmpgmem-*.whl")
    timings["build"] = time.monotonic() - start

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path, env)
    _run([venv / "bin/python", "-m", "pip", "install", "-q", wheel], tmp_path, env)
    timings["install"] = time.monotonic() - start - timings["build"]

    elsewhere = tmp_path / "elsewhere"  # no checkout, no ./scenarios
    elsewhere.mkdir()
    cache = tmp_path / "cache"
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    run_env = _clean_env(XDG_CACHE_HOME=str(cache), TMPDIR=str(tmp))
    probe = (
        "import json, qmpgmem\n"
        "from qmpgmem.guest.image import image_sources_digest, source_dir\n"
        "from qmpgmem.library import library_path\n"
        "print(json.dumps([qmpgmem.__file__, str(library_path()), str(source_dir()),"
        " image_sources_digest()]))"
    )
    where = json.loads(_run([venv / "bin/python", "-c", probe], elsewhere, run_env))
    package, shipped, sources = Path(where[0]).parent, Path(where[1]), Path(where[2])
    digest = where[3]
    assert package.is_relative_to(venv) and not package.is_relative_to(REPO)
    assert shipped == package / "data" / "scenarios" and not shipped.is_symlink()
    assert sources == package / "data" / "microguest"
    # Everything the checkout has is shipped: each scenario, and sources that hash the same.
    assert scenario_files(shipped) == scenario_files(REPO / "scenarios")
    assert digest == image.image_sources_digest(REPO / "images" / "microguest")

    validated = _run([venv / "bin/qmpgmem", "validate"], elsewhere, run_env)
    assert validated.endswith(f"{len(scenario_files(shipped))} scenarios valid\n")

    report_path = tmp_path / "report.json"
    smoke = shipped / "basic" / "smoke.yaml"
    run = [venv / "bin/qmpgmem", "run", smoke, "--accel", "tcg", "--json", report_path]
    _run(run, elsewhere, run_env)
    results = list(_results_named(json.loads(report_path.read_text()), "basic-smoke"))
    assert results and all(r["status"] == "passed" for r in results), results
    built = cache / "qmpgmem" / "microguest" / digest
    assert (built / image.OUTPUTS["rom"]).stat().st_size == image.ROM_SIZE
    # The range-hash helper's source is shipped too: the run compiled it into the cache.
    hasher = "from qmpgmem import fasthash; print(fasthash.hasher().name)"
    assert _run([venv / "bin/python", "-c", hasher], elsewhere, run_env).startswith("compiled")
    assert list((cache / "qmpgmem" / "fasthash").glob("rangehash-*.so"))
    timings["run"] = time.monotonic() - start - timings["build"] - timings["install"]
    print("wheel test timings:", ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))
