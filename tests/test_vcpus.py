"""Several vCPUs end to end, on real QEMU and real /dev/kvm: the scenario runs pass on both
engines, a step on vCPU 1 is answered by APIC ID 1, and a wrong expectation fails.

Why through the runner: what a user sees is the step result (which vCPU ran it, which hash it
saw); the engine-level protocol tests are in tests/engines/test_smp.py.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from qmpgmem.report.result import ScenarioResult, Status
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import load_scenario
from qmpgmem.session import host_context, run_scenarios

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "kvm_available")]

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("qemu", "kvm")


async def run(path: Path, tmp_path: Path) -> dict[str, ScenarioResult]:
    ctx = await host_context()
    report = await run_scenarios(
        [load_scenario(path)],
        ctx,
        [RunOptions(engine=e, artifacts_dir=tmp_path / "arts") for e in ENGINES],
    )
    return {r.engine: r for r in report.results}


def scenario(tmp_path: Path, steps: str, vcpus: int = 2) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            name: vcpus-test
            description: a test of several vCPUs
            vm:
              vcpus: {vcpus}
              memory: [{{id: ram0, size: 8M}}]
            steps:
            """
        )
        + textwrap.indent(textwrap.dedent(steps), "  ")
    )
    return path


@pytest.mark.usefixtures("no_leftovers")
async def test_library_scenario_passes_on_both_engines(tmp_path: Path) -> None:
    results = await run(ROOT / "scenarios/basic/two-vcpus-disjoint.yaml", tmp_path)
    for engine in ENGINES:
        r = results[engine]
        assert r.status is Status.PASSED, (engine, r.reason)
        first = r.steps[0]
        assert first.action == "guest.parallel"
        assert "steps[1] guest.write on vCPU 1 (APIC 1)" in (first.seen or "")
    # the same hashes on both engines, sub-step by sub-step
    assert [s.seen for s in results["qemu"].steps] == [s.seen for s in results["kvm"].steps]


@pytest.mark.usefixtures("no_leftovers")
async def test_a_step_on_vcpu_1_runs_there(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """\
        - {action: guest.write, vcpu: 1, range: {region: ram0, size: 64K}, seed: 5}
        - {action: guest.verify, vcpu: 0, range: {region: ram0, size: 64K}, expect: {pattern: 5}}
        - {action: guest.verify, vcpu: 2, range: {region: ram0, size: 64K}}
        """,
        vcpus=3,
    )
    for engine, r in (await run(path, tmp_path)).items():
        assert r.status is Status.PASSED, (engine, r.reason)
        assert [s.message for s in r.steps] == [
            "on vCPU 1 (APIC 1)",
            "on vCPU 0 (APIC 0)",
            "on vCPU 2 (APIC 2)",
        ], engine
        assert r.steps[2].computed  # the model predicted what vCPU 1 wrote


@pytest.mark.usefixtures("no_leftovers")
async def test_wrong_expectation_in_parallel_fails(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """\
        - action: guest.parallel
          steps:
            - {action: guest.write, vcpu: 0, range: {region: ram0, size: 1M}, seed: 1}
            - {action: guest.write, vcpu: 1, range: {region: ram0, offset: 1M, size: 1M}, seed: 2}
        - action: guest.parallel
          steps:
            - {action: guest.verify, vcpu: 0, range: {region: ram0, size: 1M}, expect: {pattern: 1}}
            - action: guest.verify
              vcpu: 1
              range: {region: ram0, offset: 1M, size: 1M}
              expect: {pattern: 3}
        """,
    )
    for engine, r in (await run(path, tmp_path)).items():
        assert r.status is Status.FAILED, (engine, r.reason)
        failed = r.steps[1]
        assert failed.status is Status.FAILED
        assert failed.message.startswith("steps[1] guest.verify on vCPU 1 (APIC 1): "), engine
        assert "pattern seed 3" in failed.message
        assert "steps[0]" not in failed.message  # the right sub-step passed


@pytest.mark.usefixtures("no_leftovers")
async def test_racing_read_accepts_only_the_stated_outcomes(tmp_path: Path) -> None:
    """A word read while another vCPU writes it: old or new content passes, nothing else."""
    race = """\
        - {action: guest.write, range: {region: ram0, size: 4K}, seed: 8}
        - action: guest.parallel
          steps:
            - {action: guest.write, vcpu: 0, range: {region: ram0, size: 4K}, seed: 9}
            - action: guest.verify
              vcpu: 1
              range: {region: ram0, offset: 2K, size: 8}
              expect: EXPECT
        - {action: guest.verify, vcpu: 1, range: {region: ram0, size: 4K}}
        """
    good = scenario(tmp_path, race.replace("EXPECT", "{any_of: [{pattern: 8}, {pattern: 9}]}"))
    for engine, r in (await run(good, tmp_path)).items():
        assert r.status is Status.PASSED, (engine, r.reason)
        # a read changes nothing: after the race the page holds what the write wrote
        assert r.steps[2].computed and "pattern seed 9" in (r.steps[2].expected or "")
    bad = scenario(tmp_path, race.replace("EXPECT", "{any_of: [zero, {pattern: 7}]}"))
    for engine, r in (await run(bad, tmp_path)).items():
        assert r.status is Status.FAILED, (engine, r.reason)
        assert "any of zeros, pattern seed 7" in r.steps[1].message


@pytest.mark.usefixtures("no_leftovers")
async def test_racing_writes_leave_the_overlap_unknown(tmp_path: Path) -> None:
    path = scenario(
        tmp_path,
        """\
        - action: guest.parallel
          steps:
            - {action: guest.write, vcpu: 0, range: {region: ram0, size: 8K}, seed: 1}
            - {action: guest.write, vcpu: 1, range: {region: ram0, offset: 4K, size: 8K}, seed: 2}
        - {action: guest.verify, range: {region: ram0, size: 4K}}
        - {action: guest.verify, vcpu: 1, range: {region: ram0, offset: 4K, size: 4K}}
        - {action: guest.verify, range: {region: ram0, offset: 8K, size: 4K}}
        """,
    )
    for engine, r in (await run(path, tmp_path)).items():
        assert r.status is Status.PASSED, (engine, r.reason)
        before, overlap, after = r.steps[1:]
        assert before.computed and after.computed
        assert not overlap.computed and "cannot predict" in overlap.message, engine


@pytest.mark.usefixtures("no_leftovers")
async def test_eight_vcpus_at_once(tmp_path: Path) -> None:
    """The most a VM may have: every vCPU writes its own MiB in one guest.parallel."""
    writes = "".join(
        f"    - {{action: guest.write, vcpu: {k}, range: {{region: ram0, offset: {k}M, "
        f"size: 1M}}, seed: {k}}}\n"
        for k in range(8)
    )
    path = scenario(
        tmp_path,
        "- action: guest.parallel\n  steps:\n"
        + writes
        + "- {action: guest.verify, vcpu: 7, range: {region: ram0, size: 8M}}\n",
        vcpus=8,
    )
    path.write_text(path.read_text().replace("size: 8M}]", "size: 16M}]"))
    for engine, r in (await run(path, tmp_path)).items():
        assert r.status is Status.PASSED, (engine, r.reason)
        assert r.steps[1].computed
        assert all(f"vCPU {k} (APIC {k})" in (r.steps[0].seen or "") for k in range(8))
