"""apply_step and the builders, driven by real scenario models."""

from __future__ import annotations

from typing import Any

import pytest

from qmpgmem.guest import protocol
from qmpgmem.model import (
    ZERO,
    MemoryModel,
    ModelContext,
    Pattern,
    RegionKind,
    RegionSpec,
    Unknown,
    apply_step,
    context_for_vm,
    model_for_vm,
    region_spec,
)
from qmpgmem.model.steps import (
    _HANDLERS,
    model_for_run,
    parse_qemu_version,
    qmp_has_no_memory_effect,
)
from qmpgmem.scenario.model import STEP_ACTIONS, Scenario, Step

K4 = 0x1000


def scenario(steps: list[dict[str, Any]], **vm: Any) -> Scenario:
    return Scenario.model_validate(
        {
            "name": "t",
            "description": "model test",
            "vm": {
                "memory": [
                    {"id": "ram0", "size": "64K"},
                    {"id": "gmem0", "size": "64K", "backend": "guest_memfd"},
                ],
                **vm,
            },
            "steps": steps,
        }
    )


def rng(region: str = "ram0", offset: str = "0", size: str = "4K") -> dict[str, str]:
    return {"region": region, "offset": offset, "size": size}


def run(
    steps: list[dict[str, Any]], engine: str = "kvm", **vm: Any
) -> tuple[MemoryModel, list[Step]]:
    sc = scenario(steps, **vm)
    model = model_for_vm(sc.vm, context_for_vm(sc.vm, engine, (10, 0, 2)))  # type: ignore[arg-type]
    for step in sc.steps:
        apply_step(model, step)
    return model, sc.steps


def test_every_step_action_has_a_rule() -> None:
    assert set(_HANDLERS) == set(STEP_ACTIONS)


def test_writes_from_guest_and_host() -> None:
    model, _ = run(
        [
            {"action": "guest.write", "range": rng(size="8K"), "seed": 7},
            {"action": "host.write", "range": rng(offset="4K", size="4K"), "seed": 8},
        ]
    )
    assert model.expected_content("ram0", 0, 3 * K4) == [
        (0, K4, Pattern(7)),
        (K4, K4, Pattern(8)),
        (2 * K4, K4, ZERO),
    ]


@pytest.mark.parametrize(
    ("expect", "override", "private"),
    [
        ("ok", None, True),
        ("refused", None, False),
        ("ok", False, False),  # the host refused although the scenario expected ok
        ("refused", True, True),  # the host converted although the scenario expected refusal
    ],
)
def test_convert_follows_expectation_or_actual_outcome(
    expect: str, override: bool | None, private: bool
) -> None:
    sc = scenario(
        [{"action": "guest.convert", "range": rng("gmem0"), "to": "private", "expect": expect}]
    )
    model = model_for_vm(sc.vm, context_for_vm(sc.vm, "kvm"))
    apply_step(model, sc.steps[0], convert_ok=override)
    attr = model.attributes("gmem0", 0, K4)[0][2]
    assert (attr == "private") is private


def test_punch_and_allocate_reach_the_guest_memfd() -> None:
    model, _ = run(
        [
            {"action": "host.write", "range": rng("gmem0", size="8K"), "seed": 3},
            {"action": "host.gmem_punch_hole", "range": rng("gmem0")},
            {"action": "host.gmem_allocate", "range": rng("gmem0", size="8K")},
        ]
    )
    assert model.expected_content("gmem0", 0, 2 * K4, "host") == [
        (0, K4, ZERO),
        (K4, K4, Pattern(3)),
    ]


@pytest.mark.parametrize(
    "step",
    [
        {"action": "guest.verify", "range": rng()},
        {"action": "guest.verify", "range": rng(), "expect": "zero"},
        {"action": "host.read", "range": rng()},
        {"action": "vm.stop"},
        {"action": "vm.cont"},
        {"action": "vm.reset"},
        {"action": "wait_event", "event": "RESET"},
        {"action": "sleep", "seconds": "1ms"},
        {"action": "qmp", "command": "query-status"},
        {"action": "qmp", "command": "x-query-ramblock"},
        {
            "action": "qmp",
            "command": "trace-event-set-state",
            "arguments": {"name": "kvm*", "enable": True},
        },
        {"action": "qmp", "command": "system_reset"},
        {"action": "qmp", "command": "device_add", "expect": {"error": "GenericError"}},
    ],
)
def test_steps_without_memory_effect(step: dict[str, Any]) -> None:
    model, _ = run([{"action": "guest.write", "range": rng(), "seed": 5}, step], engine="qemu")
    assert model.expected_content("ram0", 0, K4) == [(0, K4, Pattern(5))]


def test_unknown_qmp_command_makes_memory_unknown() -> None:
    model, _ = run(
        [
            {"action": "guest.write", "range": rng(), "seed": 5},
            {"action": "qmp", "command": "device_add", "arguments": {"driver": "virtio-balloon"}},
        ],
        engine="qemu",
    )
    (_, _, content), *_ = model.expected_content("ram0", 0, K4)
    assert isinstance(content, Unknown) and "device_add" in content.reason
    assert model.expected_hash("ram0", 0, K4) is None


def test_qmp_system_reset_follows_reset_semantics() -> None:
    sc = scenario(
        [{"action": "qmp", "command": "system_reset"}],
        vm_type="sev-snp",
    )
    model = model_for_vm(sc.vm, context_for_vm(sc.vm, "qemu", (10, 0, 2)))
    model.host_write("ram0", 0, K4, 1)
    apply_step(model, sc.steps[0])  # QEMU 10 cannot reset an SNP guest
    assert model.expected_hash("ram0", 0, K4, "host") is None


@pytest.mark.parametrize(
    ("command", "none"),
    [
        ("query-memdev", True),
        ("x-query-ramblock", True),
        ("pmemsave", True),
        ("stop", True),
        ("migrate", False),
        ("balloon", False),
        ("system_reset", False),
    ],
)
def test_qmp_allowlist(command: str, none: bool) -> None:
    assert qmp_has_no_memory_effect(command) is none


# -- builders ---------------------------------------------------------------------------------


def test_context_reads_change_vmfd_from_qemu_args() -> None:
    steps = [{"action": "vm.reset"}]
    vm = scenario(steps, qemu_args=["-machine", "microvm,x-change-vmfd-on-reset=on"]).vm
    ctx = context_for_vm(vm, "qemu", (11, 1, 3), "kvm_pvm")
    assert ctx == ModelContext(
        engine="qemu",
        qemu_version=(11, 1, 3),
        kvm_backend="kvm_pvm",
        vm_type="default",
        change_vmfd_on_reset=True,
    )
    assert not context_for_vm(scenario(steps).vm, "qemu", (11, 1, 3)).change_vmfd_on_reset
    kvm = context_for_vm(vm, "kvm", (11, 1, 3))
    assert kvm.qemu_version is None and not kvm.change_vmfd_on_reset


def test_region_spec_copies_the_scenario_region() -> None:
    vm = scenario([{"action": "vm.stop"}]).vm
    assert region_spec(vm.memory[1]) == RegionSpec(
        id="gmem0",
        size=0x10000,
        backend="guest_memfd",
        flavour="auto",
        gmem_flags=("mmap", "init_shared"),
    )


def test_model_for_vm_takes_overrides() -> None:
    sc = scenario(
        [{"action": "vm.stop"}],
        memory=[{"id": "f", "size": "64K", "backend": "file", "path": "/tmp/x"}],
    )
    ctx = context_for_vm(sc.vm, "qemu", (10, 0, 2))
    assert model_for_vm(sc.vm, ctx).expected_hash("f", 0, K4) is None
    known = model_for_vm(sc.vm, ctx, [RegionSpec("f", 0x10000, "file", initial=ZERO)])
    assert known.expected_content("f", 0, K4) == [(0, K4, ZERO)]


# -- the runner's entry point -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "version"),
    [
        ("10.0.2", (10, 0, 2)),
        ("11.1", (11, 1)),
        ("QEMU emulator version 11.1.3 (Debian 1:11.1.3+ds-1)", (11, 1, 3)),
        ("", None),
        (None, None),
        ("unknown", None),
    ],
)
def test_parse_qemu_version(text: str | None, version: tuple[int, ...] | None) -> None:
    assert parse_qemu_version(text) == version


class FakeHost:
    """The two attributes model_for_run reads from the runner's HostContext."""

    def __init__(self, qemu_version: str | None, kvm_backend: str) -> None:
        self.qemu_version = qemu_version
        self.kvm_backend = kvm_backend


def test_model_for_run_predicts_hash_and_text() -> None:
    sc = scenario([{"action": "guest.write", "range": rng(size="8K"), "seed": 7}])
    run_model = model_for_run(sc, "qemu", FakeHost("10.0.2", "kvm_pvm"))
    assert run_model.model.ctx.qemu_version == (10, 0, 2)
    assert run_model.model.ctx.kvm_backend == "kvm_pvm"
    run_model.apply_step(sc.steps[0])
    want, text = run_model.expected("ram0", 0, 3 * K4) or (None, "")
    data = run_model.model.expected_bytes("ram0", 0, 3 * K4)
    assert want == protocol.hash_bytes(data)
    assert text == "pattern seed 7 over [0x0, 0x2000), zero over [0x2000, 0x3000)"
    assert run_model.describe("ram0", 0, K4, "host") == "pattern seed 7 over [0x0, 0x1000)"


def test_model_for_run_without_prediction_returns_none() -> None:
    sc = scenario(
        [{"action": "vm.stop"}],
        memory=[{"id": "f", "size": "64K", "backend": "file", "path": "/tmp/x"}],
    )
    assert model_for_run(sc, "kvm", FakeHost(None, "")).expected("f", 0, K4) is None


def test_model_for_run_rejects_unknown_engines() -> None:
    with pytest.raises(ValueError):
        model_for_run(scenario([{"action": "vm.stop"}]), "tcg")


@pytest.mark.parametrize(
    ("flavour", "vm_type", "kind", "guest_predicted"),
    [
        (None, "default", RegionKind.UNRESOLVED, False),
        ("auto", "default", RegionKind.UNRESOLVED, False),
        ("sev-snp", "sev-snp", RegionKind.SPLIT, False),  # fresh private of SNP: unknown
        ("memfd-private", "sw-protected", RegionKind.SPLIT, True),
        ("guest-memfd-property", "default", RegionKind.IN_PLACE, True),
    ],
)
def test_model_for_run_uses_the_resolved_flavour(
    flavour: str | None, vm_type: str, kind: RegionKind, guest_predicted: bool
) -> None:
    sc = scenario([{"action": "vm.stop"}])  # gmem0 is backend guest_memfd, flavour auto
    run_model = model_for_run(sc, "qemu", FakeHost("11.1.3", "kvm_amd"), flavour)
    assert run_model.model.ctx.vm_type == vm_type
    assert run_model.model.kind("gmem0") is kind
    assert run_model.model.kind("ram0") is (
        RegionKind.SPLIT if vm_type == "sev-snp" else RegionKind.PLAIN
    )
    assert (run_model.expected("gmem0", 0, K4) is not None) is guest_predicted


def test_explicit_region_flavour_sets_the_vm_type() -> None:
    sc = scenario(
        [{"action": "vm.stop"}],
        memory=[{"id": "g", "size": "64K", "backend": "guest_memfd", "flavour": "tdx"}],
    )
    ctx = context_for_vm(sc.vm, "qemu", (11, 1, 3))
    assert ctx.vm_type == "tdx"
    assert context_for_vm(sc.vm, "kvm").vm_type == "default"
