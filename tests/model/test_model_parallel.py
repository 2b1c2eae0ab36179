"""R22: the memory model's view of guest.parallel, and validate's check of any_of.

Why: disjoint sub-steps must be predicted exactly; raced bytes must become Unknown (never a
confident wrong hash); a stated set of outcomes is accepted when the model's own prediction
is one of them.
"""

from __future__ import annotations

from typing import Any

from qmpgmem.guest.protocol import pattern_hash, zero_hash
from qmpgmem.model.check import disagreements
from qmpgmem.model.steps import apply_step, context_for_vm, model_for_vm
from qmpgmem.scenario.model import Scenario


def scenario(steps: list[dict[str, Any]], **vm: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "p",
            "description": "parallel",
            "vm": {"vcpus": 2, "memory": [{"id": "m0", "size": "1M"}], **vm},
            "steps": steps,
        }
    )


def rng(offset: int, size: int = 4096) -> dict[str, Any]:
    return {"region": "m0", "offset": offset, "size": size}


def parallel(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"action": "guest.parallel", "steps": list(steps)}


def model_after(sc: Scenario):  # type: ignore[no-untyped-def]
    model = model_for_vm(sc.vm, context_for_vm(sc.vm, "qemu", (10, 0, 2)))
    for step in sc.steps:
        apply_step(model, step)
    return model


def test_disjoint_writes_are_each_applied() -> None:
    sc = scenario(
        [
            parallel(
                {"action": "guest.write", "vcpu": 0, "range": rng(0), "seed": 1},
                {"action": "guest.write", "vcpu": 1, "range": rng(4096), "seed": 2},
            )
        ]
    )
    model = model_after(sc)
    assert model.expected_hash("m0", 0, 4096) == pattern_hash(1, 0, 4096)
    assert model.expected_hash("m0", 4096, 4096) == pattern_hash(2, 4096, 4096)
    assert model.expected_hash("m0", 8192, 4096) == zero_hash(4096)


def test_overlapping_writes_are_unknown_only_where_they_overlap() -> None:
    sc = scenario(
        [
            parallel(
                {"action": "guest.write", "vcpu": 0, "range": rng(0, 8192), "seed": 1},
                {"action": "guest.write", "vcpu": 1, "range": rng(4096, 8192), "seed": 2},
            )
        ]
    )
    model = model_after(sc)
    assert model.expected_hash("m0", 0, 4096) == pattern_hash(1, 0, 4096)
    assert model.expected_hash("m0", 4096, 4096) is None
    assert "two vCPUs" in model.describe("m0", 4096, 4096)
    assert model.expected_hash("m0", 8192, 4096) == pattern_hash(2, 8192, 4096)


def test_a_racing_read_changes_nothing() -> None:
    sc = scenario(
        [
            parallel(
                {"action": "guest.write", "vcpu": 0, "range": rng(0), "seed": 1},
                {"action": "guest.verify", "vcpu": 1, "range": rng(0, 8), "expect": "zero"},
            )
        ]
    )
    assert model_after(sc).expected_hash("m0", 0, 4096) == pattern_hash(1, 0, 4096)


def test_any_of_agrees_when_the_prediction_is_one_of_them() -> None:
    race = [
        {"action": "guest.write", "range": rng(0), "seed": 1},
        parallel(
            {"action": "guest.write", "vcpu": 0, "range": rng(0), "seed": 2},
            {
                "action": "guest.verify",
                "vcpu": 1,
                "range": rng(8, 8),
                "expect": {"any_of": [{"pattern": 1}, {"pattern": 2}]},
            },
        ),
    ]
    assert disagreements(scenario(race), "qemu") == []
    race[1]["steps"][1]["expect"] = {"any_of": [{"pattern": 2}, "zero"]}
    (found,) = disagreements(scenario(race), "qemu")
    assert found.step_index == 1
    assert found.message.startswith("steps[1] (vCPU 1) expects pattern 2 or zero")
