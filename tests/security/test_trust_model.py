"""The trust model end to end (issue 13, docs/security.md): a scenario file is data.

QMP commands that reach the host, raw ``qemu_args`` and files outside the run directory are
refused before the VM starts (``run``, ``run --plan``) and by ``validate`` unless the run is
``--allow-unsafe``; real QEMU, nothing harmful: the exec test only touches a marker file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.security.conftest import VM, qmpgmem

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary")]


def _exec_scenario(tmp_path: Path, marker: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "name: migrate-exec\ndescription: migrate to an exec URI\n" + VM + "steps:\n"
        "  - action: qmp\n    command: query-status\n"
        "  - action: qmp\n    command: migrate\n"
        f'    arguments: {{uri: "exec:touch {marker}"}}\n'
        "  - action: sleep\n    seconds: 1\n"
    )


@pytest.mark.usefixtures("no_leftovers")
def test_migrate_to_exec_runs_nothing_without_allow_unsafe(tmp_path: Path) -> None:
    """``migrate`` to ``exec:`` ran a shell command (as the runner, root on CI hosts)."""
    marker = tmp_path / "marker"
    _exec_scenario(tmp_path, marker)
    res = qmpgmem("run", "s.yaml", "--json", "r.json", "--artifacts", "arts", cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    (result,) = json.loads((tmp_path / "r.json").read_text())["results"]
    assert result["status"] == "error" and result["steps"] == []
    reason = result["reason"]
    assert reason.startswith("step 2: (s.yaml:12) qmp migrate reaches the host"), reason
    assert "argument uri 'exec:touch" in reason and "--allow-unsafe" in reason
    time.sleep(1)
    assert not marker.exists()
    assert json.loads((tmp_path / "r.json").read_text())["allow_unsafe"] is False


@pytest.mark.usefixtures("no_leftovers")
def test_with_allow_unsafe_the_same_step_does_run(tmp_path: Path) -> None:
    """The policy is the only guard: opted in, the very same command runs."""
    marker = tmp_path / "marker"
    _exec_scenario(tmp_path, marker)
    res = qmpgmem("run", "s.yaml", "--allow-unsafe", "--json", "r.json", cwd=tmp_path)
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert marker.exists(), res.stdout + res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["allow_unsafe"] is True
    assert "--allow-unsafe" in report["results"][0]["reproduce"]


UNSAFE_FILES = {
    "hmp": ("qmp", "human-monitor-command", '{"command-line": "info status"}'),
    "pmemsave-out": ("qmp", "pmemsave", '{val: 0, size: 4096, filename: "/tmp/qmpgmem-x"}'),
    "dump-out": ("qmp", "dump-guest-memory", '{paging: false, protocol: "file:/tmp/d"}'),
    "screendump": ("qmp", "screendump", '{filename: "/tmp/s.ppm"}'),
    "getfd": ("qmp", "getfd", "{fdname: x}"),
    "add-fd": ("qmp", "add-fd", "{}"),
    "blockdev-file": ("qmp", "blockdev-add", '{driver: file, node-name: f, filename: "/etc/x"}'),
    "object-file": (
        "qmp", "object-add",
        '{qom-type: memory-backend-file, id: f, size: 4096, mem-path: "/dev/shm/q"}',
    ),
    "chardev-file": (
        "qmp", "chardev-add", '{id: c, backend: {type: file, data: {out: "/tmp/c"}}}'
    ),
}  # fmt: skip
SAFE_FILES = {
    "pmemsave-in": ("qmp", "pmemsave", "{val: 0, size: 4096, filename: mem.bin}"),
    "blockdev-null": ("qmp", "blockdev-add", "{driver: null-co, node-name: n0}"),
    "object-ram": ("qmp", "object-add", "{qom-type: memory-backend-ram, id: r, size: 4096}"),
}


def _write_qmp(dir_: Path, name: str, command: str, args: str) -> None:
    (dir_ / f"{name}.yaml").write_text(
        f"name: {name}\ndescription: one qmp step\n{VM}steps:\n"
        f"  - action: qmp\n    command: {command}\n    arguments: {args}\n"
    )


def test_plan_refuses_each_unsafe_command_and_runs_the_safe_ones(tmp_path: Path) -> None:
    reports, tmp_path = tmp_path, tmp_path / "sc"
    tmp_path.mkdir()
    for name, (_, command, args) in {**UNSAFE_FILES, **SAFE_FILES}.items():
        _write_qmp(tmp_path, name, command, args)
    (tmp_path / "qemu-args.yaml").write_text(
        "name: qemu-args\ndescription: a raw device\nvm:\n  memory: [{id: m0, size: 16M}]\n"
        "  qemu_args: [-device, 'loader,file=/etc/passwd,addr=0x1000']\n"
        "steps:\n  - action: qmp\n    command: query-status\n"
    )
    (tmp_path / "machine-args.yaml").write_text(
        "name: machine-args\ndescription: a machine property\n"
        "vm:\n  memory: [{id: m0, size: 16M}]\n  qemu_args: [-machine, 'dump-guest-core=off']\n"
        "steps:\n  - action: qmp\n    command: query-status\n"
    )
    (tmp_path / "abs-file.yaml").write_text(
        "name: abs-file\ndescription: a file outside\nvm:\n  memory:\n"
        "    - {id: f0, size: 4M, backend: file, path: /dev/shm/qmpgmem-outside}\n"
        "steps:\n  - action: guest.write\n    range: {region: f0, size: 4K}\n    seed: 1\n"
    )
    res = qmpgmem("run", "--plan", ".", "--engine", "qemu", "--json", "../r.json", cwd=tmp_path)
    results = {r["scenario"]: r for r in json.loads((reports / "r.json").read_text())["results"]}
    for name, (_, command, _) in UNSAFE_FILES.items():
        r = results[name]
        assert r["status"] == "error", (name, r["reason"])
        assert r["reason"].startswith(f"step 1: ({name}.yaml:10) qmp {command} reaches"), r
    for name in (*SAFE_FILES, "machine-args"):
        assert results[name]["status"] == "would-run", (name, results[name]["reason"])
    assert results["qemu-args"]["reason"].startswith("vm.qemu_args (qemu-args.yaml:5)")
    assert "'-device' is a raw QEMU argument" in results["qemu-args"]["reason"]
    assert results["abs-file"]["reason"].startswith("vm.memory[0].path (abs-file.yaml:5)")
    assert res.returncode == 1
    # opted in, the same plan runs them all
    res = qmpgmem("run", "--plan", ".", "--allow-unsafe", "--json", "../r.json", cwd=tmp_path)
    again = json.loads((reports / "r.json").read_text())["results"]
    assert [r["reason"] for r in again if r["status"] != "would-run"] == [], res.stdout


def test_validate_names_the_field_and_line_unless_allow_unsafe(tmp_path: Path) -> None:
    _write_qmp(tmp_path, "hmp", "human-monitor-command", '{"command-line": "info status"}')
    _write_qmp(tmp_path, "ok", "query-status", "{}")
    res = qmpgmem("validate", ".", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    (line,) = [x for x in res.stdout.splitlines() if x.startswith("hmp.yaml")]
    assert line.startswith("hmp.yaml:10:1: steps[0]: qmp human-monitor-command reaches the host")
    assert "--allow-unsafe" in line
    assert qmpgmem("validate", ".", "--allow-unsafe", cwd=tmp_path).returncode == 0


def test_a_run_that_keeps_qemu_output_in_the_run_directory(tmp_path: Path) -> None:
    """A plain file name stays inside the run directory (QEMU runs there): allowed, and
    nothing appears in the current directory."""
    _write_qmp(tmp_path, "pmemsave-in", *SAFE_FILES["pmemsave-in"][1:])
    res = qmpgmem("run", "pmemsave-in.yaml", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not (tmp_path / "mem.bin").exists()
