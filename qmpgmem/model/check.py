"""Explicit expectations against the model: where a scenario and the model disagree.

Why a warning and not an error: the model may be the one that is wrong (a rule marked
uncertain in docs/memory-model.md, a host that behaves differently); the run decides. But a
disagreement nobody sees means one of the two is silently wrong, so ``qmpgmem validate``
prints each one with the step's line.
"""

from __future__ import annotations

from dataclasses import dataclass

from qmpgmem import fasthash
from qmpgmem.model.memory import MemoryModel, View
from qmpgmem.model.steps import apply_step, context_for_vm, model_for_vm
from qmpgmem.scenario.model import (
    AnyOfExpect,
    GuestParallel,
    GuestVerify,
    HostRead,
    PatternExpect,
    Scenario,
    Step,
)


@dataclass(frozen=True)
class Disagreement:
    step_index: int  # 0-based
    message: str


def likely_engine(sc: Scenario) -> str:
    """The engine a scenario is written for: kvm for guest_memfd on a plain VM, else qemu."""
    gmem = any(r.backend == "guest_memfd" and r.flavour in (None, "auto") for r in sc.vm.memory)
    kvm_only = sc.vm.vm_type != "default" or any(
        s.action in ("host.write", "host.gmem_punch_hole", "host.gmem_allocate") for s in sc.steps
    )
    return "kvm" if gmem or kvm_only else "qemu"


def disagreements(
    sc: Scenario,
    engine: str | None = None,
    qemu_version: tuple[int, int, int] | None = (10, 0, 2),
    kvm_backend: str | None = None,
) -> list[Disagreement]:
    """Steps whose explicit ``expect`` differs from what the model predicts there."""
    which = engine or likely_engine(sc)
    ctx = context_for_vm(sc.vm, which, qemu_version, kvm_backend)  # type: ignore[arg-type]
    model = model_for_vm(sc.vm, ctx)
    found = []
    for index, step in enumerate(sc.steps):
        if isinstance(step, GuestParallel):  # each judged against the state before the step
            for sub, one in enumerate(step.steps):
                why = _disagreement(model, one, which)
                if why is not None:
                    found.append(Disagreement(index, f"steps[{sub}] (vCPU {one.vcpu}) {why}"))
        else:
            why = _disagreement(model, step, which)
            if why is not None:
                found.append(Disagreement(index, why))
        apply_step(model, step)
    return found


def _disagreement(model: MemoryModel, step: Step, which: str) -> str | None:
    """What an explicit expectation of ``step`` says that the model does not predict."""
    if not isinstance(step, GuestVerify | HostRead) or step.expect in (None, "unchanged"):
        return None
    rng = step.range
    view: View = "guest" if isinstance(step, GuestVerify) else "host"
    predicted = model.expected_hash(rng.region, rng.offset, rng.size, view)
    if predicted is None:
        return None
    exp = step.expect
    options = exp.any_of if isinstance(exp, AnyOfExpect) else [exp]
    stated = [
        fasthash.pattern_hash(e.pattern, rng.offset, rng.size)
        if isinstance(e, PatternExpect)
        else fasthash.zero_hash(rng.size)
        for e in options
    ]
    if predicted in stated:
        return None
    said = " or ".join(
        f"pattern {e.pattern}" if isinstance(e, PatternExpect) else str(e) for e in options
    )
    return (
        f"expects {said}; the {which}-engine model predicts "
        f"{model.describe(rng.region, rng.offset, rng.size, view)}"
    )
