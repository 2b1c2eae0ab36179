"""L1's QEMU command line and the run options a lab run rewrites (no boot needed)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from qmpgmem.cli.lab import _rewrite_outputs
from qmpgmem.errors import SetupError
from qmpgmem.lab.build import LabKernel
from qmpgmem.lab.machine import LabConfig, qemu_argv


def _kernel(tmp_path: Path) -> LabKernel:
    return LabKernel(tmp_path, "linux-source-7.2", "7.2.13-1", "7.2.13-qmpgmem-lab", 1.0, 1.0, 1)


def _after(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_tcg_with_svm_and_the_host_root_read_only(tmp_path: Path) -> None:
    argv = qemu_argv(LabConfig(kernel=_kernel(tmp_path)), tmp_path / "i.gz", tmp_path / "share")
    assert _after(argv, "-accel") == ["tcg,thread=multi"]
    assert _after(argv, "-cpu") == ["max"]  # AMD SVM + NPT under TCG
    root, share = _after(argv, "-virtfs")
    assert root.startswith("local,path=/,mount_tag=hostroot,") and "readonly=on" in root
    assert "readonly" not in share and "mount_tag=lab" in share
    assert "-no-reboot" in argv  # panic=-1 then ends QEMU instead of looping
    assert "panic=-1" in _after(argv, "-append")[0]


def test_cpu_resets_are_logged_where_asked(tmp_path: Path) -> None:
    config = LabConfig(kernel=_kernel(tmp_path))
    argv = qemu_argv(config, tmp_path / "i.gz", tmp_path / "s", tmp_path / "reset.log")
    assert _after(argv, "-d") == ["cpu_reset"]  # QEMU logs "Triple fault" under it
    assert _after(argv, "-D") == [str(tmp_path / "reset.log")]
    assert "-d" not in qemu_argv(config, tmp_path / "i.gz", tmp_path / "s")


def test_a_comma_in_the_share_path_cannot_add_options(tmp_path: Path) -> None:
    share = tmp_path / "a,readonly=on"
    argv = qemu_argv(LabConfig(kernel=_kernel(tmp_path)), tmp_path / "i.gz", share)
    assert f"path={tmp_path}/a,,readonly=on," in _after(argv, "-virtfs")[1]


def test_numa_nodes_split_memory_and_cpus(tmp_path: Path) -> None:
    config = LabConfig(kernel=_kernel(tmp_path), cpus=2, memory_mib=4096, numa_nodes=2)
    argv = qemu_argv(config, tmp_path / "i", tmp_path / "s")
    assert _after(argv, "-numa") == [
        "node,nodeid=0,memdev=lab-mem0,cpus=0-0",
        "node,nodeid=1,memdev=lab-mem1,cpus=1-1",
    ]
    assert "memory-backend-ram,id=lab-mem1,size=2048M" in _after(argv, "-object")
    with pytest.raises(SetupError, match="divide evenly"):
        qemu_argv(LabConfig(kernel=_kernel(tmp_path), cpus=3, numa_nodes=2), tmp_path, tmp_path)


def test_run_outputs_go_to_the_share_and_come_back_where_asked() -> None:
    args, wanted = _rewrite_outputs(
        ["--engine", "kvm", "--json", "r.json", "--junit=j.xml", "scenarios/conversion"], "/S"
    )
    assert args == [
        "--engine", "kvm", "scenarios/conversion",
        "--json", "/S/run.json", "--junit", "/S/junit.xml", "--artifacts", "/S/artifacts",
    ]  # fmt: skip
    assert wanted == {
        "--json": Path("r.json"),
        "--junit": Path("j.xml"),
        "--artifacts": Path("qmpgmem-artifacts"),
    }


def test_a_baseline_written_in_l1_comes_back_and_stdout_reports_are_refused() -> None:
    args, wanted = _rewrite_outputs(["--strict", "--write-expected-skips", "lab.yaml"], "/S")
    assert args[-2:] == ["--write-expected-skips", "/S/expected-skips.yaml"]
    assert wanted["--write-expected-skips"] == Path("lab.yaml")
    with pytest.raises(click.UsageError, match="name a file"):
        _rewrite_outputs(["--json", "-"], "/S")
