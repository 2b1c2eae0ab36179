"""File-backed regions (issue 13): the backing file is qmpgmem's own, on both engines.

It lives in the run directory unless the scenario gives an absolute path (and the run
``--allow-unsafe``); it is opened with O_NOFOLLOW, created 0600, refused when it exists
unless the scenario says ``existing: use``, and removed on teardown unless ``keep``.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from tests.security.conftest import qmpgmem

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.kvm,
    pytest.mark.usefixtures("qemu_binary", "kvm_available", "no_leftovers"),
]

ENGINES = ("--engine", "qemu", "--engine", "kvm")
STEPS = """
steps:
  - action: guest.write
    range: {region: f0, offset: 0, size: 64K}
    seed: 5
  - action: guest.verify
    range: {region: f0, offset: 0, size: 64K}
    expect: {pattern: 5}
"""


def scenario(tmp_path: Path, region: str, name: str = "file-region") -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: {name}\ndescription: a file-backed region\n"
        f"vm:\n  memory:\n    - {{id: f0, size: 4M, backend: file{region}}}\n" + STEPS
    )
    return path


def results(tmp_path: Path) -> list[dict[str, str]]:
    data = json.loads((tmp_path / "r.json").read_text())
    return list(data["results"])


def run(tmp_path: Path, *extra: str) -> tuple[int, list[dict[str, str]], str]:
    res = qmpgmem(
        "run", "s.yaml", *ENGINES, "--artifacts", "arts", "--json", "r.json", *extra,
        cwd=tmp_path,
    )  # fmt: skip
    return res.returncode, results(tmp_path), res.stdout + res.stderr


def test_a_relative_path_is_inside_the_run_directory(tmp_path: Path) -> None:
    """``path: x.mem`` used to be resolved against the current directory (and left there)."""
    scenario(tmp_path, ", path: x.mem")
    rc, res, out = run(tmp_path)
    assert rc == 0, out
    assert [r["status"] for r in res] == ["passed", "passed"]
    assert not (tmp_path / "x.mem").exists()


def test_a_symlink_is_never_followed(tmp_path: Path) -> None:
    """A symlink planted where the backing file goes (a world-writable directory) used to be
    followed: the guest's memory went into whatever it pointed at."""
    shared = tmp_path / "world"
    shared.mkdir(mode=0o1777)
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (shared / "backing.mem").symlink_to(victim)
    scenario(tmp_path, f", path: {shared}/backing.mem")
    rc, res, out = run(tmp_path, "--allow-unsafe")
    assert victim.read_text() == "precious\n", out
    assert rc == 1 and [r["status"] for r in res] == ["error", "error"], out
    assert all("exists" in r["reason"] for r in res), out
    assert (shared / "backing.mem").is_symlink()


def test_an_existing_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    """The kvm engine grew an existing 34-byte file to 4 MiB and wrote the guest pattern
    into it; QEMU did the same."""
    existing = tmp_path / "data.bin"
    existing.write_bytes(b"thirty-four bytes of someone's dat")
    assert existing.stat().st_size == 34
    scenario(tmp_path, f", path: {existing}")
    rc, res, out = run(tmp_path, "--allow-unsafe")
    assert rc == 1 and [r["status"] for r in res] == ["error", "error"], out
    assert existing.read_bytes() == b"thirty-four bytes of someone's dat"
    assert all("exists" in r["reason"] and "existing: use" in r["reason"] for r in res)


def test_existing_use_runs_on_the_file_and_never_resizes_or_removes_it(tmp_path: Path) -> None:
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small.write_bytes(b"x" * 34)
    big.write_bytes(b"\0" * (4 << 20))
    scenario(tmp_path, f", path: {small}, existing: use")
    rc, res, out = run(tmp_path, "--allow-unsafe")
    assert rc == 1 and all("34 bytes" in r["reason"] for r in res), out
    assert small.stat().st_size == 34
    scenario(tmp_path, f", path: {big}, existing: use")
    rc, res, out = run(tmp_path, "--allow-unsafe")
    assert rc == 0, out
    assert big.exists() and big.stat().st_size == 4 << 20


def test_a_file_made_outside_is_private_and_removed_unless_kept(tmp_path: Path) -> None:
    """Backing files used to be left behind, 0644, full of guest memory."""
    target = tmp_path / "outside.mem"
    scenario(tmp_path, f", path: {target}")
    rc, _, out = run(tmp_path, "--allow-unsafe")
    assert rc == 0, out
    assert not target.exists()
    for engine in ("qemu", "kvm"):
        scenario(tmp_path, f", path: {target}, keep: true")
        rc, _, out = run_one(tmp_path, engine)
        assert rc == 0, out
        assert stat.S_IMODE(target.stat().st_mode) == 0o600, engine
        assert target.stat().st_uid == os.getuid()
        target.unlink()


def run_one(tmp_path: Path, engine: str) -> tuple[int, list[dict[str, str]], str]:
    res = qmpgmem(
        "run", "s.yaml", "--engine", engine, "--json", "r.json", "--allow-unsafe", cwd=tmp_path
    )
    return res.returncode, results(tmp_path), res.stdout + res.stderr


def test_kept_run_directory_files_are_private_on_the_kvm_engine(tmp_path: Path) -> None:
    scenario(tmp_path, "")
    res = qmpgmem("run", "s.yaml", "--engine", "kvm", "--keep-run-dirs", "--artifacts",
                  "arts", "--json", "r.json", cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    (result,) = results(tmp_path)
    mem = tmp_path / result["artifacts"] / "f0.mem"
    assert stat.S_IMODE(mem.stat().st_mode) == 0o600
