"""The generator: deterministic, valid, never skipped, expectations the model agrees with."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from pydantic import TypeAdapter

from qmpgmem.fuzz.generate import MAX_REGION, MIN_REGION, generate_scenario
from qmpgmem.fuzz.target import FUZZ_ACTIONS, REFUSED_ON_DEFAULT_VM, FuzzTarget, fuzz_target
from qmpgmem.guest import protocol
from qmpgmem.model import View, model_for_run
from qmpgmem.runner import HostContext, RunOptions, ScenarioRun, step_skip_reason
from qmpgmem.scenario.loader import LoadedScenario
from qmpgmem.scenario.model import (
    PAGE_SIZE,
    GuestConvert,
    GuestVerify,
    HostRead,
    PatternExpect,
    Scenario,
    Step,
)

COUNT = 120


def _scenarios(target: FuzzTarget, count: int = COUNT, steps: int = 12) -> list[Scenario]:
    return [generate_scenario(target, 7, i, steps) for i in range(1, count + 1)]


def _targets(pvm: HostContext, hw: HostContext, tcg: HostContext) -> list[FuzzTarget]:
    return [
        fuzz_target("qemu", pvm),
        fuzz_target("kvm", pvm),
        fuzz_target("qemu", hw),
        fuzz_target("kvm", hw),
        fuzz_target("qemu", tcg),
    ]


def test_same_seed_same_scenarios_other_seed_others(pvm_host: HostContext) -> None:
    target = fuzz_target("qemu", pvm_host)
    first = [generate_scenario(target, 1, i) for i in range(1, 6)]
    again = [generate_scenario(target, 1, i) for i in range(1, 6)]
    other = [generate_scenario(target, 2, i) for i in range(1, 6)]
    assert first == again
    assert len({s.model_dump_json() for s in first}) == 5
    assert all(a.steps != b.steps for a, b in zip(first, other, strict=True))
    # scenario 3 alone is the same as scenario 3 of the run
    assert generate_scenario(target, 1, 3) == first[2]


def test_step_count_and_shape(
    pvm_host: HostContext, hw_host: HostContext, tcg_host: HostContext
) -> None:
    for target in _targets(pvm_host, hw_host, tcg_host):
        for steps in (1, 5, 30):
            for sc in _scenarios(target, 10, steps):
                assert len(sc.steps) == steps
                assert 1 <= len(sc.vm.memory) <= 2
                for region in sc.vm.memory:
                    assert MIN_REGION <= region.size <= MAX_REGION
                    assert region.size % target.region_granule == 0
                assert sc.vm.accel == target.accel
                # the last step reads something back
                assert sc.steps[-1].action in ("guest.verify", "host.read")


def test_every_scenario_runs_here_unskipped(
    pvm_host: HostContext, hw_host: HostContext, tcg_host: HostContext
) -> None:
    """What the runner's preflight says about each scenario: nothing (no skip)."""
    for host in (pvm_host, hw_host, tcg_host):
        for engine in ("qemu", "kvm") if host.kvm_usable else ("qemu",):
            target = fuzz_target(engine, host)
            for sc in _scenarios(target, 60):
                for step in sc.steps:
                    assert step_skip_reason(step, engine, target.accel, host) is None
                run = ScenarioRun(_loaded(sc), host, RunOptions(engine=engine), engine_factory=None)
                assert run.preflight() is None, (engine, host.kvm_backend, sc.name)
                assert target.problem(sc) is None


def _loaded(sc: Scenario) -> LoadedScenario:
    return LoadedScenario(sc, Path(f"{sc.name}.yaml"), [1] * len(sc.steps), "")


def test_ranges_are_aligned_and_inside(
    pvm_host: HostContext, hw_host: HostContext, tcg_host: HostContext
) -> None:
    for target in _targets(pvm_host, hw_host, tcg_host):
        for sc in _scenarios(target, 40):
            sizes = {r.id: r.size for r in sc.vm.memory}
            for step in sc.steps:
                rng = getattr(step, "range", None)
                if rng is None:
                    continue
                align = (
                    PAGE_SIZE
                    if step.action
                    in ("guest.convert", "host.gmem_punch_hole", "host.gmem_allocate")
                    else 8
                )
                assert rng.offset % align == 0 and rng.size % align == 0, step
                assert rng.size > 0 and rng.end <= sizes[rng.region]


def test_odd_region_sizes_only_where_the_engine_takes_them(pvm_host: HostContext) -> None:
    kvm = {
        r.size % (1 << 20) for sc in _scenarios(fuzz_target("kvm", pvm_host)) for r in sc.vm.memory
    }
    assert len(kvm) > 5  # page multiples that are not whole MiB
    qemu = {
        r.size % (1 << 20) for sc in _scenarios(fuzz_target("qemu", pvm_host)) for r in sc.vm.memory
    }
    assert qemu == {0}


def test_engines_get_their_backends_and_actions(
    pvm_host: HostContext, hw_host: HostContext
) -> None:
    qemu = Counter(
        r.backend for sc in _scenarios(fuzz_target("qemu", pvm_host)) for r in sc.vm.memory
    )
    assert set(qemu) == {"memfd", "ram"} and qemu["memfd"] > qemu["ram"]
    kvm_scenarios = _scenarios(fuzz_target("kvm", pvm_host))
    backends = Counter(r.backend for sc in kvm_scenarios for r in sc.vm.memory)
    assert backends["guest_memfd"] > backends["memfd"] > 0
    for sc in kvm_scenarios:
        for r in sc.vm.memory:
            if r.backend == "guest_memfd":
                assert r.gmem_flags == ["mmap", "init_shared"]
        if any(r.backend == "guest_memfd" for r in sc.vm.memory):
            assert {"kvm", "guest_memfd", "guest_memfd_mmap"} <= set(sc.requires)
    actions = Counter(s.action for sc in kvm_scenarios for s in sc.steps)
    for action in ("host.write", "host.gmem_punch_hole", "host.gmem_allocate"):
        assert actions[action] > 0
    assert "guest.convert" not in actions  # kvm_pvm: the hypercall never returns


@pytest.mark.parametrize("engine", ["qemu", "kvm"])
def test_actions_are_what_the_runner_runs(engine: str, pvm_host: HostContext) -> None:
    """Every action the runner accepts for this engine and host is generated, no other."""
    target = fuzz_target(engine, pvm_host)
    accepted = set()
    for action in FUZZ_ACTIONS:
        data: dict[str, object] = {"action": action}
        if "." in action and not action.startswith("vm."):
            data["range"] = {"region": "m0", "size": 4096}
        if action.endswith("write"):
            data["seed"] = 3
        if action == "guest.convert":
            data["to"] = "shared"
        step = TypeAdapter(Step).validate_python(data)
        if step_skip_reason(step, engine, target.accel, pvm_host) is None:
            accepted.add(action)
    if not {"vm.stop", "vm.cont"} <= accepted:
        accepted -= {"vm.stop", "vm.cont"}
    assert target.actions == accepted
    generated = {s.action for sc in _scenarios(target) for s in sc.steps}
    assert generated == accepted
    assert {a for a, _ in target.left_out if a in FUZZ_ACTIONS} == set(FUZZ_ACTIONS) - accepted


def test_conversions_only_where_the_hypercall_returns(
    pvm_host: HostContext, hw_host: HostContext
) -> None:
    for engine in ("qemu", "kvm"):
        assert "guest.convert" not in fuzz_target(engine, pvm_host).actions
        reason = dict(fuzz_target(engine, pvm_host).left_out)["guest.convert"]
        assert "kvm_pvm" in reason
    outcomes: Counter[tuple[str, str, int | None]] = Counter()
    for engine in ("qemu", "kvm"):
        for sc in _scenarios(fuzz_target(engine, hw_host)):
            for step in sc.steps:
                if isinstance(step, GuestConvert):
                    outcomes[(sc.vm.vm_type, step.expect.outcome, step.expect.code)] += 1
                    assert "hypercall_returns" in sc.requires
                    region = sc.vm.region(step.range.region)
                    if sc.vm.vm_type == "sw-protected":
                        assert region.backend == "guest_memfd" and region.gmem_flags == []
    assert outcomes[("default", "refused", REFUSED_ON_DEFAULT_VM)] > 0
    assert outcomes[("sw-protected", "ok", None)] > 0
    assert set(outcomes) == {
        ("default", "refused", REFUSED_ON_DEFAULT_VM),
        ("sw-protected", "ok", None),
    }


def test_most_checks_are_left_to_the_model_and_explicit_ones_agree_with_it(
    pvm_host: HostContext, hw_host: HostContext
) -> None:
    kinds: Counter[str] = Counter()
    for target in (fuzz_target("qemu", pvm_host), fuzz_target("kvm", hw_host)):
        for sc in _scenarios(target):
            model = model_for_run(sc, target.engine, target.host)
            seen: dict[tuple[str, int, int], int | None] = {}
            for step in sc.steps:
                if isinstance(step, GuestVerify | HostRead):
                    r = step.range
                    view: View = "guest" if isinstance(step, GuestVerify) else "host"
                    predicted = model.expected(r.region, r.offset, r.size, view=view)
                    want = predicted[0] if predicted else None
                    key = (r.region, r.offset, r.size)
                    exp = step.expect
                    if exp is None:
                        kinds["model"] += 1
                    elif isinstance(exp, PatternExpect):
                        kinds["pattern"] += 1
                        assert want == protocol.pattern_hash(exp.pattern, r.offset, r.size)
                    elif exp == "zero":
                        kinds["zero"] += 1
                        assert want == protocol.zero_hash(r.size)
                    else:
                        kinds["unchanged"] += 1
                        assert want is not None and seen[key] == want
                    seen[key] = want
                model.apply_step(step)
    total = sum(kinds.values())
    assert kinds["model"] / total > 0.6
    assert min(kinds["pattern"], kinds["zero"], kinds["unchanged"]) > 0


def test_paused_vm_gets_no_guest_step(pvm_host: HostContext) -> None:
    """While paused: host steps, and the lifecycle steps a paused VM takes (a reset keeps it
    paused, a second stop changes nothing) — both are generated."""
    target = fuzz_target("qemu", pvm_host)
    stops, paused_lifecycle = 0, 0
    for sc in _scenarios(target):
        paused = False
        for step in sc.steps:
            if step.action == "vm.stop" and not paused:
                paused, stops = True, stops + 1
            elif step.action == "vm.cont":
                paused = False
            elif paused:
                assert step.action in ("host.read", "host.write", "vm.reset", "vm.stop"), sc.name
                paused_lifecycle += step.action in ("vm.reset", "vm.stop")
    assert stops > 10
    assert paused_lifecycle > 0


def test_kvm_engine_without_kvm_is_a_setup_error(tcg_host: HostContext) -> None:
    from qmpgmem.errors import SetupError

    with pytest.raises(SetupError, match="/dev/kvm"):
        fuzz_target("kvm", tcg_host)
    with pytest.raises(SetupError, match="unknown engine"):
        fuzz_target("xen", tcg_host)
    target = fuzz_target("qemu", tcg_host)
    assert target.accel == "tcg"
    assert all(not sc.requires for sc in _scenarios(target, 10))


def test_unprobed_kvm_host_gets_plain_regions(unprobed_host: HostContext) -> None:
    target = fuzz_target("kvm", unprobed_host)
    assert [v.name for v in target.variants] == ["plain"]
    assert any("not probed" in why for _, why in target.left_out)
    for sc in _scenarios(target, 20):
        assert {r.backend for r in sc.vm.memory} <= {"memfd", "ram"}
        assert not {"host.gmem_punch_hole", "host.gmem_allocate"} & {s.action for s in sc.steps}


def test_steps_below_one_is_an_error(pvm_host: HostContext) -> None:
    with pytest.raises(ValueError, match="at least one step"):
        generate_scenario(fuzz_target("qemu", pvm_host), 1, 1, 0)
