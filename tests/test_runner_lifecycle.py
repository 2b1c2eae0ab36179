"""Scenarios whose meaning must not depend on the engine: pause, reset, sleep, timeouts,
accelerator, unchecked reads, and QEMU ending under a step (real QEMU, real /dev/kvm)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpgmem.report.result import ScenarioResult, Status
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import LoadedScenario, load_scenario
from qmpgmem.scenario.model import Scenario
from qmpgmem.session import host_context, run_scenarios
from tests.conftest import our_qemu_pids

pytestmark = [
    pytest.mark.qemu,
    pytest.mark.usefixtures("qemu_binary", "kvm_available", "no_leftovers"),
]

VM = """
vm:
  machine: microvm
  vcpus: {vcpus}
  memory:
    - id: m0
      size: 16M
"""
ENGINES = ("qemu", "kvm")


def scenario(
    write_scenario: Callable[[str, str], Path], name: str, steps: str, vcpus: int = 1
) -> LoadedScenario:
    text = f"name: {name}\ndescription: {name}\nsteps:\n" + textwrap.indent(
        textwrap.dedent(steps).strip("\n"), "  "
    )
    return load_scenario(write_scenario(name, text + "\n" + VM.format(vcpus=vcpus)))


async def run(
    tmp_path: Path, loaded: LoadedScenario, *engines: str, **options: object
) -> dict[str, ScenarioResult]:
    ctx = await host_context()
    opts = [
        RunOptions(engine=e, artifacts_dir=tmp_path / "arts", **options)  # type: ignore[arg-type]
        for e in engines or ENGINES
    ]
    report = await run_scenarios([loaded], ctx, opts)
    return {r.engine: r for r in report.results}


# -- a reset keeps a paused VM paused; the restart completes on the next vm.cont --------------


@pytest.mark.parametrize("vcpus", [1, 2])
async def test_reset_of_a_paused_vm_boots_on_cont_on_both_engines(
    tmp_path: Path, write_scenario: Callable[[str, str], Path], vcpus: int
) -> None:
    loaded = scenario(
        write_scenario,
        f"reset-paused-{vcpus}",
        """
        - action: guest.write
          range: {region: m0, size: 64K}
          seed: 1
        - action: vm.stop
        - action: vm.reset
          timeout: 5s
        - action: host.read
          range: {region: m0, size: 64K}
          expect: {pattern: 1}
        - action: vm.cont
        - action: guest.verify
          range: {region: m0, size: 64K}
          expect: {pattern: 1}
        """,
        vcpus,
    )
    results = await run(tmp_path, loaded)
    for engine, r in results.items():
        assert r.status is Status.PASSED, f"{engine}: {r.reason}"
        assert r.steps[2].duration_s < 3, engine  # the reset does not wait for a HELLO
        assert [s.status for s in r.steps] == [Status.PASSED] * 6


async def test_raw_qmp_system_reset_is_a_reset(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    loaded = scenario(
        write_scenario,
        "qmp-reset",
        """
        - action: guest.write
          range: {region: m0, size: 64K}
          seed: 2
        - action: qmp
          command: system_reset
        - action: guest.verify
          range: {region: m0, size: 64K}
        - action: guest.write
          vcpu: 1
          range: {region: m0, offset: 64K, size: 4K}
          seed: 3
        - action: qmp
          command: stop
        - action: qmp
          command: system_reset
        - action: qmp
          command: cont
        - action: guest.verify
          vcpu: 1
          range: {region: m0, size: 68K}
        """,
        vcpus=2,
    )
    r = (await run(tmp_path, loaded, "qemu"))["qemu"]
    assert r.status is Status.PASSED, r.reason
    assert r.steps[2].computed and r.steps[7].computed  # the model followed both resets


# -- a guest step while paused is refused before anything starts ------------------------------


@pytest.mark.parametrize("pause", ["action: vm.stop", "{action: qmp, command: stop}"])
async def test_guest_step_while_paused_is_an_error_with_its_line(
    tmp_path: Path, write_scenario: Callable[[str, str], Path], pause: str
) -> None:
    loaded = scenario(
        write_scenario,
        "paused-write",
        f"""
        - action: guest.write
          range: {{region: m0, size: 4K}}
          seed: 1
        - {pause}
        - action: vm.reset
        - action: guest.verify
          range: {{region: m0, size: 4K}}
        """,
    )
    line = loaded.step_lines[3]
    before = our_qemu_pids()
    t0 = time.monotonic()
    engines = ENGINES if "vm.stop" in pause else ("qemu",)
    results = await run(tmp_path, loaded, *engines)
    assert time.monotonic() - t0 < 5  # no step timeout, no VM
    assert not our_qemu_pids() - before
    for engine, r in results.items():
        assert r.status is Status.ERROR, engine
        assert r.reason.startswith(f"step 4 (line {line}): guest.verify needs running vCPUs")
        assert "step 2 (" in r.reason and "vm.cont" in r.reason
        assert not r.steps


async def test_cont_after_stop_makes_the_guest_step_valid(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    loaded = scenario(
        write_scenario,
        "stop-cont-write",
        """
        - action: vm.stop
        - {action: qmp, command: cont}
        - action: guest.write
          range: {region: m0, size: 4K}
          seed: 1
        """,
    )
    r = (await run(tmp_path, loaded, "qemu"))["qemu"]
    assert r.status is Status.PASSED, r.reason


# -- a step timeout shorter than its sleep ------------------------------------------------------


async def test_sleep_honours_its_own_timeout(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    loaded = scenario(
        write_scenario,
        "short-timeout",
        """
        - action: sleep
          seconds: 5
          timeout: 500ms
        """,
    )
    t0 = time.monotonic()
    results = await run(tmp_path, loaded)
    assert time.monotonic() - t0 < 4.5
    for engine, r in results.items():
        assert r.status is Status.TIMEOUT, engine
        assert r.reason == "step 1: sleep did not finish within 0.5 s", engine


# -- --accel on the kvm engine ---------------------------------------------------------------


async def test_kvm_engine_with_accel_tcg_says_why_it_skips(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    loaded = scenario(
        write_scenario,
        "accel-tcg",
        """
        - action: guest.write
          range: {region: m0, size: 4K}
          seed: 1
        """,
    )
    results = await run(tmp_path, loaded, "qemu", "kvm", accel="tcg")
    assert results["qemu"].status is Status.PASSED and results["qemu"].accel == "tcg"
    kvm = results["kvm"]
    assert kvm.status is Status.SKIPPED
    assert kvm.reason.startswith("--accel tcg asks for QEMU's emulator; the kvm engine runs on KVM")
    ctx = await host_context()
    plan = await run_scenarios([loaded], ctx, RunOptions(engine="kvm", accel="tcg"), plan_only=True)
    assert plan.results[0].status is Status.WOULD_SKIP
    assert plan.results[0].reason == kvm.reason


# -- a passed run that checked nothing -------------------------------------------------------


async def test_a_run_whose_every_read_is_unpredictable_warns(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    loaded = scenario(
        write_scenario,
        "unpredictable",
        """
        - action: guest.write
          range: {region: m0, size: 4K}
          seed: 1
        - action: qmp
          command: migrate-set-parameters
          arguments: {downtime-limit: 400}
        - action: guest.verify
          range: {region: m0, size: 4K}
        - action: guest.verify
          range: {region: m0, offset: 8K, size: 4K}
        """,
    )
    r = (await run(tmp_path, loaded, "qemu"))["qemu"]
    assert r.status is Status.PASSED, r.reason
    (warning,) = r.warnings
    assert warning.startswith("nothing was checked: the memory model could not predict any")
    assert "(steps 3, 4)" in warning


async def test_a_run_with_one_checked_read_does_not_warn(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    loaded = scenario(
        write_scenario,
        "predictable",
        """
        - action: guest.write
          range: {region: m0, size: 4K}
          seed: 1
        - action: guest.verify
          range: {region: m0, size: 4K}
        """,
    )
    for engine, r in (await run(tmp_path, loaded)).items():
        assert r.status is Status.PASSED and r.warnings == [], engine


# -- QEMU ending under a step ----------------------------------------------------------------


async def test_qemu_killed_during_a_sleep_is_reported_at_once(
    tmp_path: Path, write_scenario: Callable[[str, str], Path]
) -> None:
    loaded = scenario(
        write_scenario,
        "killed-sleeping",
        """
        - action: sleep
          seconds: 20
        - action: guest.verify
          range: {region: m0, size: 4K}
          expect: zero
        """,
    )
    before = our_qemu_pids()
    task = asyncio.create_task(run(tmp_path, loaded, "qemu"))
    started: set[int] = set()
    for _ in range(400):
        started = our_qemu_pids() - before
        if started:
            break
        await asyncio.sleep(0.02)
    assert started, "QEMU never started"
    await asyncio.sleep(0.5)
    t0 = time.monotonic()
    for pid in started:
        os.kill(pid, signal.SIGKILL)
    r = (await asyncio.wait_for(task, 30))["qemu"]
    assert time.monotonic() - t0 < 5
    assert r.status is Status.ERROR
    assert r.reason.startswith("step 1: sleep: QEMU was killed by SIGKILL while sleeping"), r.reason


async def test_qmp_connection_broken_while_qemu_lives_is_a_clean_error(tmp_path: Path) -> None:
    """QEMU refuses a command over its JSON nesting limit; the QMP client drops the
    connection. Every run is an error result naming that, never a traceback."""
    nested: object = 0
    for _ in range(1100):
        nested = [nested]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10000)
    try:
        loaded = []
        for n in range(3):
            sc = Scenario.model_validate(
                {
                    "name": f"qmp-break-{n}",
                    "description": "a QMP argument nested past QEMU's parser limit",
                    "vm": {"machine": "microvm", "memory": [{"id": "m0", "size": "16M"}]},
                    "steps": [
                        {"action": "qmp", "command": "qom-list", "arguments": {"path": "/"}},
                        {"action": "qmp", "command": "qom-list", "arguments": {"x": nested}},
                    ],
                }
            )
            loaded.append(LoadedScenario(sc, tmp_path / f"b{n}.json", [2, 3], ""))
        ctx = await host_context()
        report = await run_scenarios(
            loaded, ctx, RunOptions(engine="qemu", artifacts_dir=tmp_path / "arts")
        )
    finally:
        sys.setrecursionlimit(limit)
    assert len(report.results) == 3
    for r in report.results:
        assert r.status is Status.ERROR, r.reason
        assert r.reason.startswith(
            "step 2: qmp: the QMP connection broke while running QMP qom-list, and QEMU is "
            "still running: QEMU's parser refused the message (GenericError: JSON nesting "
            "depth limit exceeded)"
        ), r.reason
