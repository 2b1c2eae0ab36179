"""Scenario values never become extra QEMU options, shell commands or terminal control.

Each test names the defect of issue 13 it covers; all run the real CLI on real QEMU.
"""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from tests.security.conftest import FAILING_STEPS, VM, qmpgmem

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "no_leftovers")]


def _report(path: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads(path.read_text())
    return data


def test_comma_in_the_name_sets_no_qemu_option(tmp_path: Path) -> None:
    """``name: "x,debug-threads=on"`` used to give QEMU ``-name qmpgmem-x,debug-threads=on``,
    i.e. the name ``qmpgmem-x`` plus the property debug-threads."""
    (tmp_path / "s.yaml").write_text(
        'name: "x,debug-threads=on"\ndescription: a comma in the name\n'
        + VM
        + "steps:\n  - action: qmp\n    command: query-name\n"
        + '    expect: {return: {name: "qmpgmem-x,debug-threads=on"}}\n'
    )
    res = qmpgmem("run", "s.yaml", "--json", "r.json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


def test_comma_in_a_file_backend_path_sets_no_backend_property(tmp_path: Path) -> None:
    """``path: "x.mem,prealloc=on,dump=off"`` used to set prealloc and dump on the backend
    (and to create ``x.mem`` in the current directory)."""
    (tmp_path / "s.yaml").write_text(
        """\
name: comma-path
description: a comma in a file backend's path
vm:
  memory:
    - {id: f0, size: 8M, backend: file, path: "x.mem,prealloc=on,dump=off"}
steps:
  - action: qmp
    command: query-memdev
    expect: {return: [{id: f0, dump: true, prealloc: false}]}
"""
    )
    res = qmpgmem("run", "s.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (tmp_path / "x.mem").exists()


def test_comma_in_tmpdir_sets_no_backend_property(tmp_path: Path) -> None:
    """The run directory lives under TMPDIR; a TMPDIR with a comma used to end the
    memory-backend-file's mem-path early and add properties of its own."""
    tmpdir = tmp_path / "t,dump=off"
    tmpdir.mkdir()
    (tmp_path / "s.yaml").write_text(
        """\
name: comma-tmpdir
description: a file backend in a run directory whose path has a comma
vm:
  memory:
    - {id: f0, size: 8M, backend: file}
steps:
  - action: guest.write
    range: {region: f0, offset: 0, size: 64K}
    seed: 3
  - action: qmp
    command: query-memdev
    expect: {return: [{id: f0, dump: true}]}
  - action: host.read
    range: {region: f0, offset: 0, size: 64K}
    expect: {pattern: 3}
"""
    )
    res = qmpgmem("run", "s.yaml", cwd=tmp_path, env={"TMPDIR": str(tmpdir)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert not list(tmpdir.glob("qmpgmem-*"))


def test_trace_event_with_a_comma_sets_no_trace_option(tmp_path: Path) -> None:
    """``expect_trace`` events go to ``-trace enable=EVENT``; ``file=`` would redirect the
    trace log to any path."""
    leak = tmp_path / "leak.log"
    (tmp_path / "s.yaml").write_text(
        f"name: trace-comma\ndescription: a comma in a trace event\n{VM}"
        "steps:\n  - action: qmp\n    command: query-status\n"
        f'expect_trace:\n  - {{event: "kvm_set_user_memory,file={leak}", min_count: 0}}\n'
    )
    res = qmpgmem("run", "s.yaml", "--artifacts", "arts", cwd=tmp_path)
    assert not leak.exists(), res.stdout + res.stderr


def _stub_qmpgmem(tmp_path: Path) -> dict[str, str]:
    """A PATH whose ``qmpgmem`` does nothing, so running reproduce.sh re-runs nothing."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    stub = bin_dir / "qmpgmem"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_newline_in_the_name_does_not_run_from_reproduce_sh(tmp_path: Path) -> None:
    """A newline in the name used to split reproduce.sh's comment line (the QEMU command
    line, which carries ``-name``): the rest of the name ran as a shell command."""
    marker = tmp_path / "marker"
    (tmp_path / "s.yaml").write_text(
        'name: "nl\\ntouch marker\\n"\ndescription: a newline in the name\n' + VM + FAILING_STEPS
    )
    res = qmpgmem("run", "s.yaml", "--artifacts", "arts", "--json", "r.json", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    (result,) = _report(tmp_path / "r.json")["results"]  # type: ignore[misc]
    script = tmp_path / result["artifacts"] / "reproduce.sh"
    text = script.read_text()
    done = subprocess.run(["sh", str(script)], env=_stub_qmpgmem(tmp_path), cwd=tmp_path)
    assert not marker.exists(), text
    assert done.returncode == 0
    for line in text.splitlines():
        assert line.startswith(("#", "qmpgmem ")), line


def test_escape_sequences_in_the_name_reach_no_terminal(tmp_path: Path) -> None:
    """A name that erases its line and prints PASSED made a FAILED line display as PASSED."""
    (tmp_path / "s.yaml").write_text(
        'name: "evil\\e[2K\\rPASSED  fine\\e]0;title\\a\\u202e"\n'
        "description: terminal control in the name\n" + VM + FAILING_STEPS
    )
    res = qmpgmem("run", "s.yaml", "--artifacts", "arts", cwd=tmp_path, env={"NO_COLOR": "1"})
    assert res.returncode == 1
    out = res.stdout + res.stderr
    for bad in ("\x1b", "\r", "\x07", "\u202e"):
        assert bad not in out, repr(out)
    assert "FAILED  evil\\x1b[2K\\rPASSED  fine\\x1b]0;title\\x07\\u202e [qemu/" in out
    arts = [p.name for p in (tmp_path / "arts").iterdir()]
    assert all(n.isascii() and n.isprintable() for n in arts), arts


def test_names_alike_keep_their_own_artifacts(tmp_path: Path) -> None:
    """``dup x`` and ``dup_x`` mapped to one artifact directory; the second run deleted the
    first one's files."""
    for i, name in enumerate(("dup x", "dup_x")):
        (tmp_path / f"s{i}.yaml").write_text(
            f'name: "{name}"\ndescription: alike names\n' + VM + FAILING_STEPS
        )
    res = qmpgmem(
        "run", "s0.yaml", "s1.yaml", "--artifacts", "arts", "--json", "r.json", cwd=tmp_path
    )
    assert res.returncode == 1, res.stdout + res.stderr
    results = _report(tmp_path / "r.json")["results"]
    dirs = [tmp_path / r["artifacts"] for r in results]  # type: ignore[attr-defined]
    assert len(set(dirs)) == 2, dirs
    for r, d in zip(results, dirs, strict=True):  # type: ignore[call-overload]
        assert (d / "qemu.log").exists() and (d / "reproduce.sh").exists()
        assert f"-k {shlex.quote(r['scenario'])} " in (d / "reproduce.sh").read_text()


def test_kept_files_are_private(tmp_path: Path) -> None:
    """Kept artifacts (guest memory among them) are readable by their owner only."""
    (tmp_path / "s.yaml").write_text(
        "name: private\ndescription: kept files\n"
        "vm:\n  memory:\n    - {id: m0, size: 8M, backend: file}\n" + FAILING_STEPS
    )
    res = qmpgmem("run", "s.yaml", "--artifacts", "arts", "--json", "r.json", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    (result,) = _report(tmp_path / "r.json")["results"]  # type: ignore[misc]
    kept = tmp_path / result["artifacts"]
    assert stat.S_IMODE(kept.stat().st_mode) == 0o700
    mem = kept / "m0.mem"
    assert mem.exists() and stat.S_IMODE(mem.stat().st_mode) == 0o600
