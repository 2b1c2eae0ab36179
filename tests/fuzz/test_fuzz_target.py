"""What a fuzz target refuses: actions the runner would skip, guest steps on a paused VM,
``unchanged`` without a reference; the shrinker relies on each of these."""

from __future__ import annotations

from typing import Any

import pytest

from qmpgmem.fuzz.target import fuzz_target
from qmpgmem.runner import HostContext
from qmpgmem.scenario.model import Scenario

W = {"action": "guest.write", "range": {"region": "m0", "size": 8}, "seed": 1}
V = {"action": "guest.verify", "range": {"region": "m0", "size": 8}}
R = {"action": "host.read", "range": {"region": "m0", "size": 8}}
STOP, CONT, RESET = {"action": "vm.stop"}, {"action": "vm.cont"}, {"action": "vm.reset"}


def _sc(*steps: dict[str, Any], size: int = 1 << 20) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "t",
            "description": "",
            "vm": {"memory": [{"id": "m0", "size": size}]},
            "steps": list(steps),
        }
    )


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        ((W, V, R), None),
        ((W, STOP, R, CONT, V), None),
        ((W, STOP, R), None),
        ((STOP, V), "step 2: guest.verify while the VM is paused"),
        ((STOP, W, CONT), "step 2: guest.write while the VM is paused"),
        ((STOP, RESET, R, CONT, V), None),  # a reset keeps a paused VM paused
        ((STOP, STOP, CONT), None),
        ((STOP, RESET, V), "step 3: guest.verify while the VM is paused"),
        ((R, {**V, "expect": "unchanged"}), None),
        (({**V, "expect": "unchanged"},), "step 1: 'unchanged' without an earlier read"),
        (
            (R, {**V, "range": {"region": "m0", "size": 16}, "expect": "unchanged"}),
            "step 2: 'unchanged' without an earlier read",
        ),
    ],
)
def test_qemu_target_problems(
    pvm_host: HostContext, steps: tuple[dict[str, Any], ...], problem: str | None
) -> None:
    got = fuzz_target("qemu", pvm_host).problem(_sc(*steps))
    if problem is None:
        assert got is None
    else:
        assert got is not None and got.startswith(problem)


def test_target_refuses_what_the_runner_skips(pvm_host: HostContext) -> None:
    kvm, qemu = fuzz_target("kvm", pvm_host), fuzz_target("qemu", pvm_host)
    convert = {"action": "guest.convert", "range": {"region": "m0", "size": 4096}, "to": "private"}
    for target in (kvm, qemu):  # kvm_pvm: a guest hypercall never returns
        assert target.problem(_sc(W, V)) is None
        assert target.problem(_sc(W, convert)) == (
            "step 2: guest.convert does not run on this target"
        )
    host_write = {"action": "host.write", "range": {"region": "m0", "size": 8}, "seed": 2}
    assert kvm.problem(_sc(host_write, V)) is None
    assert qemu.problem(_sc(host_write, V)) == "step 1: host.write does not run on this target"


def test_region_sizes_follow_the_engine(pvm_host: HostContext) -> None:
    odd = _sc(W, V, size=12 << 10)
    assert fuzz_target("kvm", pvm_host).problem(odd) is None
    assert fuzz_target("qemu", pvm_host).problem(odd) == (
        "region m0: size 0x3000 is not a multiple of 0x100000 on engine qemu"
    )
