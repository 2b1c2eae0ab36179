"""Whether the vCPUs run at each step (rule R24): a guest step needs them running.

Why in the model: like the memory rules, this follows from what each step does to the VM
(``vm.stop`` and QMP ``stop`` pause the vCPUs, ``vm.cont`` and QMP ``cont`` resume them, a
reset leaves a paused VM paused), and it holds on both engines. A guest step while paused
would only wait for a guest that cannot answer until its step timeout; the runner refuses
the scenario before anything starts instead, naming the step, its line and the step that
paused the VM (docs/memory-model.md R24).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from qmpgmem.scenario.model import Step

__all__ = ["GUEST_ACTIONS", "PausedGuestStep", "paused_guest_steps"]

#: Steps the guest itself runs: they need running vCPUs.
GUEST_ACTIONS: Final = frozenset({"guest.write", "guest.verify", "guest.convert", "guest.parallel"})


@dataclass(frozen=True)
class PausedGuestStep:
    """A guest step at ``step_index`` while the step at ``paused_by`` left the VM paused."""

    step_index: int  # 0-based
    paused_by: int  # 0-based
    message: str


def _qmp_command(step: Step) -> str | None:
    """The command of a ``qmp`` step that is expected to succeed (a failing one does nothing)."""
    if step.action != "qmp":
        return None
    expect = getattr(step, "expect", None)
    if expect is not None and expect.expects_error:
        return None
    command: str = getattr(step, "command", "")
    return command


def _pauses(step: Step) -> bool:
    return step.action == "vm.stop" or _qmp_command(step) == "stop"


def _resumes(step: Step) -> bool:
    return step.action == "vm.cont" or _qmp_command(step) == "cont"


def paused_guest_steps(steps: Sequence[Step]) -> list[PausedGuestStep]:
    """Every guest step that runs while the VM is paused, in order.

    A reset (``vm.reset``, QMP ``system_reset``) changes nothing here: a paused VM stays
    paused, and its guest's restart completes on the next cont.
    """
    found: list[PausedGuestStep] = []
    paused_by: int | None = None
    for index, step in enumerate(steps):
        if step.action in GUEST_ACTIONS and paused_by is not None:
            by = steps[paused_by]
            what = by.action if by.action != "qmp" else "qmp stop"
            found.append(
                PausedGuestStep(
                    index,
                    paused_by,
                    f"{step.action} needs running vCPUs, but step {paused_by + 1} ({what}) "
                    "paused the VM and no vm.cont resumed it before this step: the guest "
                    "cannot answer (add a vm.cont before it)",
                )
            )
        elif _pauses(step):
            paused_by = index
        elif _resumes(step):
            paused_by = None
    return found
