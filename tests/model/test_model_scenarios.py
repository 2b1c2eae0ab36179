"""The shipped scenarios against the model: every explicit expectation the model can predict
must be what the model predicts, so a scenario and the model never silently disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpgmem.guest import protocol
from qmpgmem.model import View, apply_step, context_for_vm, model_for_vm
from qmpgmem.scenario.loader import load_scenario
from qmpgmem.scenario.model import GuestVerify, HostRead, PatternExpect, Scenario

SCENARIOS = sorted((Path(__file__).parents[2] / "scenarios").rglob("*.yaml"))


def engine_for(sc: Scenario) -> str:
    """The kvm engine for scenarios on guest_memfd (QEMU cannot do them on a plain VM)."""
    gmem = any(r.backend == "guest_memfd" for r in sc.vm.memory)
    host_only = any(s.action in ("host.write", "host.gmem_punch_hole") for s in sc.steps)
    return "kvm" if gmem or host_only else "qemu"


def test_there_are_scenarios() -> None:
    assert SCENARIOS, "no scenarios/ directory with YAML files next to tests/"


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_expectations_agree_with_the_model(path: Path) -> None:
    sc = load_scenario(path).scenario
    ctx = context_for_vm(sc.vm, engine_for(sc), (10, 0, 2), "kvm_pvm")  # type: ignore[arg-type]
    model = model_for_vm(sc.vm, ctx)
    for index, step in enumerate(sc.steps):
        if isinstance(step, GuestVerify | HostRead) and step.expect not in (None, "unchanged"):
            rng = step.range
            view: View = "guest" if isinstance(step, GuestVerify) else "host"
            predicted = model.expected_hash(rng.region, rng.offset, rng.size, view)
            if isinstance(step.expect, PatternExpect):
                stated = protocol.pattern_hash(step.expect.pattern, rng.offset, rng.size)
            else:
                stated = protocol.zero_hash(rng.size)
            if predicted is not None:
                assert predicted == stated, (
                    f"{path.name} step {index + 1}: the scenario expects {step.expect}, the "
                    f"model predicts {model.describe(rng.region, rng.offset, rng.size, view)}"
                )
        apply_step(model, step)
