"""R24: which steps run while the VM is paused (qmpgmem/model/lifecycle.py), table-driven."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import TypeAdapter

from qmpgmem.model import paused_guest_steps
from qmpgmem.scenario.model import Step

STEP: TypeAdapter[Step] = TypeAdapter(Step)
RNG = {"region": "m0", "size": 4096}
STOP, CONT, RESET = {"action": "vm.stop"}, {"action": "vm.cont"}, {"action": "vm.reset"}
WRITE = {"action": "guest.write", "range": RNG, "seed": 1}
VERIFY = {"action": "guest.verify", "range": RNG}
READ = {"action": "host.read", "range": RNG}
PARALLEL = {"action": "guest.parallel", "steps": [WRITE, {**VERIFY, "vcpu": 1}]}


def qmp(command: str, **kw: Any) -> dict[str, Any]:
    return {"action": "qmp", "command": command, **kw}


@pytest.mark.parametrize(
    ("steps", "refused"),
    [
        ([WRITE, STOP, READ, CONT, VERIFY], []),
        ([STOP, WRITE], [(1, 0)]),
        ([WRITE, STOP, RESET, VERIFY], [(3, 1)]),  # a reset keeps the VM paused
        ([STOP, RESET, CONT, VERIFY], []),
        ([STOP, STOP, PARALLEL], [(2, 1)]),
        ([qmp("stop"), VERIFY, qmp("cont"), VERIFY], [(1, 0)]),
        ([STOP, qmp("cont"), WRITE], []),
        ([qmp("stop", expect={"error": "GenericError"}), WRITE], []),  # a failing stop
        ([STOP, {"action": "sleep", "seconds": 0.1}, READ, WRITE, VERIFY], [(3, 0), (4, 0)]),
        ([qmp("system_reset"), WRITE], []),
    ],
)
def test_guest_steps_while_paused(
    steps: list[dict[str, Any]], refused: list[tuple[int, int]]
) -> None:
    found = paused_guest_steps([STEP.validate_python(s) for s in steps])
    assert [(p.step_index, p.paused_by) for p in found] == refused


def test_the_message_names_both_steps() -> None:
    (found,) = paused_guest_steps([STEP.validate_python(s) for s in (WRITE, qmp("stop"), VERIFY)])
    assert found.message.startswith(
        "guest.verify needs running vCPUs, but step 2 (qmp stop) paused the VM and no vm.cont"
    )
