"""``qmpgmem run`` end to end: real QEMU, real guest, statuses, reports, teardown."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import our_qemu_pids
from tests.conftest import qmpgmem_cli as qmpgmem

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "no_leftovers")]


def with_vm(body: str) -> str:
    """A scenario's text: its name, description and steps, plus the VM these tests share."""
    return textwrap.dedent(body) + VM


VM = """
vm:
  machine: microvm
  memory:
    - id: m0
      size: 16M
"""


def test_wrong_expectation_fails_naming_step_range_and_hashes(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    path = write_scenario(
        "wrong",
        with_vm(
            """
        name: wrong-seed
        description: expects seed 2 where seed 1 was written
        steps:
          - action: guest.write
            range: {region: m0, offset: 0, size: 64K}
            seed: 1
          - action: guest.verify
            range: {region: m0, offset: 0, size: 64K}
            expect: {pattern: 2}
        """
        ),
    )
    arts = tmp_path / "arts"
    res = qmpgmem(
        "run",
        str(path),
        "--artifacts",
        str(arts),
        "--json",
        str(tmp_path / "r.json"),
        "--junit",
        str(tmp_path / "j.xml"),
        cwd=tmp_path,
    )
    assert res.returncode == 1, res.stdout + res.stderr
    assert "step 2" in res.stdout and "m0[0x0+0x10000]" in res.stdout
    assert "expected pattern seed 2" in res.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["summary"]["failed"] == 1
    result = report["results"][0]
    assert result["status"] == "failed" and result["steps"][1]["status"] == "failed"
    kept = Path(result["artifacts"])
    for name in ("argv.txt", "qemu.log", "serial.log", "qmp.jsonl", "reproduce.sh"):
        assert (kept / name).exists(), name
    assert "WRITE" in (kept / "serial.log").read_text()
    case = ET.parse(tmp_path / "j.xml").getroot().find("testcase")
    assert case is not None and case.find("failure") is not None


def test_passing_run_leaves_nothing(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    path = write_scenario(
        "ok",
        with_vm(
            """
        name: ok
        description: write and verify
        steps:
          - action: guest.write
            range: {region: m0, offset: 4K, size: 64K}
            seed: 1
          - action: guest.verify
            range: {region: m0, offset: 4K, size: 64K}
            expect: {pattern: 1}
          - action: host.read
            range: {region: m0, offset: 4K, size: 64K}
            expect: unchanged
        """
        ),
    )
    res = qmpgmem("run", str(path), "--artifacts", str(tmp_path / "arts"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 passed, 0 failed" in res.stdout
    assert not (tmp_path / "arts").exists()


def test_a_relative_qemu_path_is_taken_from_the_callers_directory(
    tmp_path: Path, qemu_binary: str, write_scenario: Callable[[str, str], Path]
) -> None:
    """QEMU starts in its run directory; a relative --qemu must still name the caller's file."""
    path = write_scenario(
        "rel",
        with_vm(
            """
        name: relative-qemu
        description: boots with a QEMU named relative to the working directory
        steps:
          - action: guest.write
            range: {region: m0, offset: 0, size: 4K}
            seed: 3
        """
        ),
    )
    relative = os.path.relpath(shutil.which(qemu_binary) or qemu_binary, tmp_path)
    assert os.sep in relative and not os.path.isabs(relative)
    res = qmpgmem("run", str(path), "--qemu", relative, "--json", "r.json", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    result = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert result["status"] == "passed" and os.path.isabs(result["qemu"])
    missing = qmpgmem("run", str(path), "--qemu", "./no-such-qemu", cwd=tmp_path)
    assert missing.returncode != 0 and "no-such-qemu" in missing.stdout + missing.stderr


def test_step_timeout_is_a_timeout(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    path = write_scenario(
        "hang",
        with_vm(
            """
        name: short-step-timeout
        description: a step whose own timeout is shorter than what it does
        steps:
          - action: sleep
            seconds: 10
            timeout: 1s
        """
        ),
    )
    res = qmpgmem("run", str(path), "--artifacts", str(tmp_path / "arts"), cwd=tmp_path)
    assert res.returncode == 1
    assert "TIMEOUT" in res.stdout and "within 1 s" in res.stdout


@pytest.mark.serial  # QEMU took over its 20 s to start beside a parallel suite's load
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signals_stop_everything(
    tmp_path: Path, write_scenario: Callable[[str, str], Path], sig: signal.Signals
) -> None:
    path = write_scenario(
        "long",
        with_vm(
            """
        name: long
        description: sleeps long enough to be interrupted
        steps:
          - action: sleep
            seconds: 60
        """
        ),
    )
    before = our_qemu_pids()
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmpgmem.cli", "run", str(path)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not (our_qemu_pids() - before):
            time.sleep(0.05)
        assert our_qemu_pids() - before, "QEMU never started"
        time.sleep(0.3)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:  # a failed check must not leave the run (and its QEMU) to the next test
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, out + err
    assert "interrupted" in err


@pytest.mark.serial  # beside a parallel suite the guest had not booted 0.3 s after QEMU started
async def test_qemu_killed_mid_scenario_is_an_error(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    import asyncio
    import os

    from qmpgmem.report.result import Status
    from qmpgmem.runner import RunOptions
    from qmpgmem.scenario.loader import load_scenario
    from qmpgmem.session import host_context, run_scenarios

    path = write_scenario(
        "killed",
        with_vm(
            """
        name: killed
        description: QEMU is killed while the scenario sleeps; the sleep must error
        steps:
          - action: sleep
            seconds: 3
          - action: guest.verify
            range: {region: m0, offset: 0, size: 4K}
            expect: zero
        """
        ),
    )
    ctx = await host_context()
    before = our_qemu_pids()
    task = asyncio.create_task(
        run_scenarios([load_scenario(path)], ctx, RunOptions(artifacts_dir=tmp_path / "a"))
    )
    for _ in range(200):
        started = our_qemu_pids() - before
        if started:
            break
        await asyncio.sleep(0.02)
    assert started, "QEMU never started"
    await asyncio.sleep(0.3)
    for pid in started:
        os.kill(pid, signal.SIGKILL)
    report = await asyncio.wait_for(task, 30)
    (result,) = report.results
    assert result.status is Status.ERROR
    # the sleep watches QEMU: the error is the sleep's, with the signal that ended QEMU
    assert "QEMU was killed by SIGKILL while sleeping" in result.reason, result.reason
    assert result.reason.startswith("step 1: sleep:")
    assert result.artifacts and (Path(result.artifacts) / "qemu.log").exists()


def test_misspelt_qmp_command_fails_before_the_vm_starts(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    path = write_scenario(
        "typo",
        with_vm(
            """
        name: qmp-typo
        description: a misspelt QMP command is caught against the binary's schema
        steps:
          - action: guest.write
            range: {region: m0, offset: 0, size: 4K}
            seed: 1
          - action: qmp
            command: query-memdevv
        """
        ),
    )
    res = qmpgmem("run", str(path), "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert res.returncode == 1
    result = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert result["status"] == "error"
    assert "no QMP command 'query-memdevv'" in result["reason"]
    assert "did you mean 'query-memdev'" in result["reason"]
    assert result["steps"] == []  # nothing ran: the VM was never started


def test_plan_decides_like_a_run_without_booting(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1] / "scenarios"
    args = [
        "run",
        str(root / "basic/smoke.yaml"),
        str(root / "conversion/convert-on-default-vm.yaml"),
    ]
    plan = qmpgmem(*args, "--plan", "--json", str(tmp_path / "p.json"), cwd=tmp_path)
    real = qmpgmem(*args, "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert plan.returncode == 0 and real.returncode == 0, plan.stderr + real.stderr
    assert "WOULD-RUN  basic-smoke [qemu/kvm]" in plan.stdout
    assert "plan: 1 would run, 1 would skip, 0 errors" in plan.stdout
    p = json.loads((tmp_path / "p.json").read_text())["results"]
    r = json.loads((tmp_path / "r.json").read_text())["results"]
    assert [x["status"] for x in p] == ["would-run", "would-skip"]
    assert [x["status"] for x in r] == ["passed", "skipped"]
    assert p[1]["reason"] == r[1]["reason"]
    assert p[0]["steps"] == [] and p[0]["boot_s"] is None  # nothing booted
