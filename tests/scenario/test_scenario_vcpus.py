"""vm.vcpus, the vcpu of guest steps and guest.parallel: what a scenario may say about vCPUs.

Why its own file: these rules span the VM and the steps (a vcpu exists only if vm.vcpus has
it; parallel sub-steps race only with each other), and each error must land on the YAML line
the user has to change.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from qmpgmem.scenario.loader import InvalidScenarioError, load_scenario
from qmpgmem.scenario.model import AnyOfExpect, GuestParallel, PatternExpect, Scenario


def scenario(steps: list[dict[str, Any]], vcpus: int = 2) -> dict[str, Any]:
    return {
        "name": "t",
        "description": "vCPU rules",
        "vm": {"vcpus": vcpus, "memory": [{"id": "ram0", "size": "4M"}]},
        "steps": steps,
    }


def write(offset: int, vcpu: int, seed: int = 1, size: int = 4096) -> dict[str, Any]:
    return {
        "action": "guest.write",
        "vcpu": vcpu,
        "range": {"region": "ram0", "offset": offset, "size": size},
        "seed": seed,
    }


def verify(offset: int, vcpu: int, size: int = 4096, **kw: Any) -> dict[str, Any]:
    rng = {"region": "ram0", "offset": offset, "size": size}
    return {"action": "guest.verify", "vcpu": vcpu, "range": rng, **kw}


def locs(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as info:
        Scenario.model_validate(data)
    return [tuple(e["loc"]) for e in info.value.errors()]


def test_vcpu_defaults_to_the_bsp() -> None:
    s = Scenario.model_validate(scenario([verify(0, 0)], vcpus=1))
    assert s.vm.vcpus == 1 and s.steps[0].vcpu == 0  # type: ignore[union-attr]


def test_vcpu_must_exist() -> None:
    assert locs(scenario([write(0, 2)])) == [("steps", 0, "vcpu")]
    assert locs(scenario([write(0, 1)], vcpus=1)) == [("steps", 0, "vcpu")]


def test_vcpu_out_of_range_is_a_file_line_error(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            name: t
            description: a step on a vCPU the VM does not have
            vm:
              vcpus: 2
              memory: [{id: ram0, size: 4M}]
            steps:
              - action: guest.write
                vcpu: 2
                range: {region: ram0, size: 4K}
                seed: 1
            """
        )
    )
    with pytest.raises(InvalidScenarioError) as info:
        load_scenario(path)
    (issue,) = info.value.issues
    assert (issue.line, issue.field) == (8, "steps[0].vcpu")
    assert "vm.vcpus 2" in issue.message
    assert f"{path}:8:" in str(issue)


@pytest.mark.parametrize("vcpus", [0, 9])
def test_vm_vcpus_bounds(vcpus: int) -> None:
    assert ("vm", "vcpus") in locs(scenario([write(0, 0)], vcpus=vcpus))


def test_parallel_disjoint_is_valid() -> None:
    s = Scenario.model_validate(
        scenario([{"action": "guest.parallel", "steps": [write(0, 0), write(4096, 1, 2)]}])
    )
    step = s.steps[0]
    assert isinstance(step, GuestParallel) and [x.vcpu for x in step.steps] == [0, 1]


def test_parallel_needs_distinct_vcpus() -> None:
    data = scenario([{"action": "guest.parallel", "steps": [write(0, 1), write(4096, 1)]}])
    assert locs(data) == [("steps", 0, "steps", 1, "vcpu")]


def test_parallel_sub_steps_are_checked_like_steps() -> None:
    data = scenario([{"action": "guest.parallel", "steps": [write(0, 0), write(8 << 20, 3)]}])
    assert set(locs(data)) == {
        ("steps", 0, "steps", 1, "vcpu"),
        ("steps", 0, "steps", 1, "range", "offset"),
    }


def test_parallel_needs_two_guest_steps() -> None:
    assert locs(scenario([{"action": "guest.parallel", "steps": [write(0, 0)]}])) == [
        ("steps", 0, "guest.parallel", "steps")
    ]
    bad = {"action": "host.read", "range": {"region": "ram0", "size": 8}}
    assert locs(scenario([{"action": "guest.parallel", "steps": [write(0, 0), bad]}]))


def test_racing_verify_needs_an_expectation() -> None:
    race = [write(0, 0), verify(0, 1, size=8)]
    assert locs(scenario([{"action": "guest.parallel", "steps": race}])) == [
        ("steps", 0, "steps", 1, "expect")
    ]
    race[1]["expect"] = {"any_of": ["zero", {"pattern": 1}]}
    s = Scenario.model_validate(scenario([{"action": "guest.parallel", "steps": race}]))
    expect = s.steps[0].steps[1].expect  # type: ignore[union-attr]
    assert expect == AnyOfExpect(any_of=["zero", PatternExpect(pattern=1)])


def test_two_verifies_of_the_same_bytes_do_not_race() -> None:
    both = [verify(0, 0), verify(0, 1)]
    Scenario.model_validate(scenario([{"action": "guest.parallel", "steps": both}]))
