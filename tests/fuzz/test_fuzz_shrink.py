"""The shrinker against a model-made fault, without a VM.

The "VM" here is the memory model itself with every rule intact (what the guest and host would
read), and the expectations come from a second model with one rule broken; a check fails
where the two disagree, judged the way the runner judges. That is the setting of
``qmpgmem fuzz`` with a broken rule, made fast enough to shrink dozens of scenarios.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from qmpgmem.fuzz.generate import generate_scenario
from qmpgmem.fuzz.shrink import FAILING_STEP, Shrinker, mark_step
from qmpgmem.fuzz.target import FuzzTarget, fuzz_target
from qmpgmem.guest import protocol
from qmpgmem.model import View, model_for_run
from qmpgmem.runner import HostContext
from qmpgmem.scenario.model import GuestVerify, GuestWrite, HostRead, PatternExpect, Scenario, Step

Signature = tuple[int, str, bool, str | None]


def first_failure(
    sc: Scenario, target: FuzzTarget, ignored: Callable[[Step], bool]
) -> Signature | None:
    """(step number, action, compared, name) of the first check the broken model gets wrong."""
    truth = model_for_run(sc, target.engine, target.host)
    belief = model_for_run(sc, target.engine, target.host)
    observed: dict[tuple[str, int, int], int] = {}
    for number, step in enumerate(sc.steps, 1):
        if isinstance(step, GuestVerify | HostRead):
            r = step.range
            view: View = "guest" if isinstance(step, GuestVerify) else "host"
            actual = truth.expected(r.region, r.offset, r.size, view=view)
            assert actual is not None, "the truth model must predict every generated read"
            seen = actual[0]
            key = (r.region, r.offset, r.size)
            previous = observed.get(key)
            observed[key] = seen
            exp = step.expect
            if isinstance(exp, PatternExpect):
                want = protocol.pattern_hash(exp.pattern, r.offset, r.size)
            elif exp == "zero":
                want = protocol.zero_hash(r.size)
            elif exp == "unchanged":
                if previous is None:
                    return number, step.action, False, step.name
                want = previous
            else:
                predicted = belief.expected(r.region, r.offset, r.size, view=view)
                if predicted is None:
                    continue
                want = predicted[0]
            if want != seen:
                return number, step.action, True, step.name
        truth.apply_step(step)
        if not ignored(step):
            belief.apply_step(step)
    return None


def _ignores(action: str) -> Callable[[Step], bool]:
    return lambda step: step.action == action


def _failing(target: FuzzTarget, ignored: Callable[[Step], bool], want: int) -> list[Scenario]:
    found = []
    for index in range(1, 200):
        sc = generate_scenario(target, 5, index, 14)
        if first_failure(sc, target, ignored) is not None:
            found.append(sc)
            if len(found) == want:
                break
    assert len(found) == want
    return found


async def _shrink(
    sc: Scenario, target: FuzzTarget, ignored: Callable[[Step], bool], max_runs: int = 400
) -> tuple[Shrinker, Scenario, bool]:
    found = first_failure(sc, target, ignored)
    assert found is not None
    sc = mark_step(sc, found[0] - 1)
    original = first_failure(sc, target, ignored)
    assert original is not None and original[3] == FAILING_STEP
    tried: list[Scenario] = []

    async def still_fails(candidate: Scenario) -> bool:
        tried.append(candidate)
        got = first_failure(candidate, target, ignored)
        return got is not None and got[1:] == original[1:]

    def valid(candidate: Scenario) -> bool:
        return target.problem(candidate) is None

    shrinker = Shrinker(still_fails, valid, max_runs, region_granule=target.region_granule)
    result = await shrinker.shrink(sc)
    assert all(target.problem(c) is None for c in tried), "an invalid candidate was run"
    assert len({c.model_dump_json() for c in tried}) == len(tried), "a candidate ran twice"
    return shrinker, result.scenario, result.exhausted


async def test_ignored_write_shrinks_to_write_and_read(pvm_host: HostContext) -> None:
    target = fuzz_target("qemu", pvm_host)
    for sc in _failing(target, _ignores("guest.write"), 6):
        shrinker, small, exhausted = await _shrink(sc, target, _ignores("guest.write"))
        assert not exhausted
        failing = first_failure(sc, target, _ignores("guest.write"))
        assert failing is not None
        assert [s.action for s in small.steps] == ["guest.write", failing[1]]
        assert first_failure(small, target, _ignores("guest.write")) == (
            2,
            failing[1],
            True,
            FAILING_STEP,
        )
        write, check = small.steps
        assert isinstance(write, GuestWrite) and isinstance(check, GuestVerify | HostRead)
        assert write.range == check.range
        assert (write.range.offset, write.range.size) == (0, 8)
        assert write.seed == 1
        assert check.expect is None
        assert len(small.vm.memory) == 1 and small.vm.memory[0].size == 1 << 20  # QEMU: MiB
        assert shrinker.runs < 150


async def test_ignored_punch_hole_on_the_kvm_engine(pvm_host: HostContext) -> None:
    target = fuzz_target("kvm", pvm_host)
    ignored = _ignores("host.gmem_punch_hole")
    for sc in _failing(target, ignored, 4):
        _, small, _ = await _shrink(sc, target, ignored)
        actions = [s.action for s in small.steps]
        assert "host.gmem_punch_hole" in actions and len(actions) <= 3, actions
        assert first_failure(small, target, ignored) is not None
        punch = next(s for s in small.steps if s.action == "host.gmem_punch_hole")
        assert punch.range.size == 4096
        assert small.vm.memory[0].size == 4096  # the KVM engine takes any page count


async def test_ignored_stop_keeps_cont_paired(pvm_host: HostContext) -> None:
    """A fault that needs a write while a later stop/cont is around: candidates that would
    leave the VM paused before a guest step are never run (checked in _shrink)."""
    target = fuzz_target("qemu", pvm_host)
    with_stop = [
        sc
        for sc in (generate_scenario(target, 9, i, 20) for i in range(1, 80))
        if any(s.action == "vm.stop" for s in sc.steps)
        and first_failure(sc, target, _ignores("guest.write")) is not None
    ][:3]
    assert with_stop
    for sc in with_stop:
        _, small, _ = await _shrink(sc, target, _ignores("guest.write"))
        assert len(small.steps) == 2


async def test_budget_stops_the_shrinker_with_a_failing_scenario(pvm_host: HostContext) -> None:
    target = fuzz_target("qemu", pvm_host)
    ignored = _ignores("guest.write")
    sc = _failing(target, ignored, 1)[0]
    shrinker, small, exhausted = await _shrink(sc, target, ignored, max_runs=3)
    assert exhausted and shrinker.runs == 3
    assert first_failure(small, target, ignored) is not None
    assert len(small.steps) <= len(sc.steps)


async def test_a_scenario_that_cannot_shrink_stays(pvm_host: HostContext) -> None:
    target = fuzz_target("qemu", pvm_host)
    sc = Scenario.model_validate(
        {
            "name": "tiny",
            "description": "",
            "vm": {"memory": [{"id": "m0", "size": "1M"}]},
            "steps": [
                {"action": "guest.write", "range": {"region": "m0", "size": 8}, "seed": 1},
                {"action": "guest.verify", "range": {"region": "m0", "size": 8}},
            ],
        }
    )
    shrinker, small, exhausted = await _shrink(sc, target, _ignores("guest.write"))
    assert small == mark_step(sc, 1) and not exhausted and shrinker.accepted == 0


@pytest.mark.parametrize("max_runs", [0])
async def test_zero_budget_runs_nothing(pvm_host: HostContext, max_runs: int) -> None:
    target = fuzz_target("qemu", pvm_host)
    sc = _failing(target, _ignores("guest.write"), 1)[0]
    shrinker, small, exhausted = await _shrink(sc, target, _ignores("guest.write"), max_runs)
    assert len(small.steps) == len(sc.steps) and exhausted and shrinker.runs == 0
