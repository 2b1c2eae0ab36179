"""The shipped scenarios against the model: every explicit expectation the model can predict
must be what the model predicts, so a scenario and the model never silently disagree."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpgmem.model.check import disagreements
from qmpgmem.scenario.loader import load_scenario
from qmpgmem.scenario.model import Scenario

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
    assert disagreements(sc, engine_for(sc), (10, 0, 2), "kvm_pvm") == []


def test_a_wrong_expectation_is_reported() -> None:
    sc = Scenario.model_validate(
        {
            "name": "w",
            "description": "d",
            "vm": {"memory": [{"id": "m0", "size": "1M"}]},
            "steps": [
                {"action": "guest.write", "range": {"region": "m0", "size": "4K"}, "seed": 1},
                {
                    "action": "guest.verify",
                    "range": {"region": "m0", "size": "4K"},
                    "expect": {"pattern": 2},
                },
                {"action": "host.read", "range": {"region": "m0", "size": "4K"}, "expect": "zero"},
                {
                    "action": "host.read",
                    "range": {"region": "m0", "size": "4K"},
                    "expect": {"pattern": 1},
                },
            ],
        }
    )
    found = disagreements(sc, "qemu")
    assert [d.step_index for d in found] == [1, 2]
    assert "expects pattern 2" in found[0].message and "seed 1" in found[0].message
    assert "expects zero" in found[1].message
