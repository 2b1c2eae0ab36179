"""Which steps each engine can run on which host: the skip reasons, table-driven."""

from __future__ import annotations

import pytest

from qmpgmem.runner import HostContext, step_skip_reason
from qmpgmem.scenario.model import STEP_ACTIONS

RNG = {"region": "m0", "size": 4096}
STEPS = {
    "guest.convert": {"range": RNG, "to": "private"},
    "qmp": {"command": "query-status"},
    "wait_event": {"event": "STOP"},
    "host.write": {"range": RNG, "seed": 1},
    "host.gmem_punch_hole": {"range": RNG},
    "vm.reset": {},
    "guest.write": {"range": RNG, "seed": 1},
}


def step(action: str):  # type: ignore[no-untyped-def]
    return STEP_ACTIONS[action].model_validate({"action": action, **STEPS[action]})


def host(backend: str) -> HostContext:
    return HostContext(kvm_backend=backend, kvm_usable=bool(backend))


@pytest.mark.parametrize(
    ("action", "engine", "accel", "backend", "reason_part"),
    [
        ("guest.convert", "qemu", "kvm", "kvm_pvm", "kvm_pvm (software virtualization) never"),
        ("guest.convert", "kvm", "kvm", "kvm_pvm", "never returns"),
        ("guest.convert", "qemu", "tcg", "kvm_intel", "TCG does not implement"),
        ("guest.convert", "qemu", "kvm", "kvm_intel", None),
        ("guest.convert", "kvm", "kvm", "kvm_amd", None),
        ("guest.convert", "qemu", "kvm", "", "needs kvm_intel or kvm_amd"),
        ("qmp", "kvm", "kvm", "kvm_intel", "needs the qemu engine"),
        ("wait_event", "kvm", "kvm", "kvm_pvm", "needs the qemu engine"),
        ("qmp", "qemu", "tcg", "", None),
        ("host.write", "qemu", "kvm", "kvm_pvm", "needs the kvm engine"),
        ("host.gmem_punch_hole", "qemu", "kvm", "kvm_pvm", "needs the kvm engine"),
        ("host.gmem_punch_hole", "kvm", "kvm", "kvm_pvm", None),
        ("vm.reset", "kvm", "kvm", "kvm_pvm", None),
        ("guest.write", "qemu", "tcg", "", None),
    ],
)
def test_step_skip_reason(
    action: str, engine: str, accel: str, backend: str, reason_part: str | None
) -> None:
    why = step_skip_reason(step(action), engine, accel, host(backend))
    if reason_part is None:
        assert why is None
    else:
        assert why is not None and reason_part in why
