"""Scenario steps and VM specs turned into model operations, for the runner.

Why keyed on the ``action`` tag: it is the discriminator of the scenario's step union, so one
table covers every step class, and the model gets the same dispatch the loader used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

from qmpgmem.model.content import ZERO
from qmpgmem.model.memory import MemoryModel, View
from qmpgmem.model.rules import Engine, ModelContext, RegionSpec, effective_vm_type

if TYPE_CHECKING:
    from qmpgmem.scenario.model import Region, Scenario, Step, VmSpec

__all__ = [
    "ScenarioModel",
    "apply_step",
    "context_for_vm",
    "model_for_run",
    "model_for_vm",
    "parse_qemu_version",
    "qmp_has_no_memory_effect",
    "region_spec",
]

#: QMP commands that read state or only control the vCPUs; they leave guest memory alone.
QMP_NO_MEMORY_EFFECT: Final = frozenset(
    {
        "qmp_capabilities",
        "stop",
        "cont",
        "qom-get",
        "qom-list",
        "qom-list-types",
        "qom-list-properties",
        "device-list-properties",
        "trace-event-get-state",
        "trace-event-set-state",
        "pmemsave",
        "memsave",
        "dump-guest-memory",
        "screendump",
        "system_powerdown",
        "quit",
    }
)
#: QMP commands whose memory effect is a system reset.
QMP_RESET: Final = frozenset({"system_reset"})


def region_spec(region: Region, flavour: str | None = None) -> RegionSpec:
    """The model's view of one scenario region; ``flavour`` is what QEMU flavour ``auto``
    resolved to (the engine knows, the scenario does not)."""
    chosen: str | None = region.flavour
    if flavour is not None and region.backend == "guest_memfd" and chosen in (None, "auto"):
        chosen = flavour
    # A file backend without a path is created by the engine in its fresh run directory,
    # so it starts as zeros; a file the scenario names may hold anything.
    created_empty = region.backend == "file" and region.path is None
    return RegionSpec(
        id=region.id,
        size=region.size,
        backend=region.backend,
        flavour=chosen,
        gmem_flags=tuple(region.gmem_flags),
        initial=ZERO if created_empty else None,
    )


def _qemu_flavour(vm: VmSpec, flavour: str | None) -> str | None:
    """The flavour QEMU runs the VM with: the resolved one, or the one the regions name."""
    if flavour is not None and flavour != "auto":
        return flavour
    named = {
        r.flavour
        for r in vm.memory
        if r.backend == "guest_memfd" and r.flavour not in (None, "auto")
    }
    return named.pop() if len(named) == 1 else None


def context_for_vm(
    vm: VmSpec,
    engine: Engine,
    qemu_version: tuple[int, ...] | None = None,
    kvm_backend: str | None = None,
    flavour: str | None = None,
) -> ModelContext:
    """The model context of a scenario's VM. With QEMU, ``x-change-vmfd-on-reset=on`` is read
    from ``qemu_args`` and the flavour decides the VM type (sev-snp, tdx: confidential)."""
    qemu = engine == "qemu"
    change_vmfd = qemu and any("x-change-vmfd-on-reset=on" in arg for arg in vm.qemu_args)
    vm_type = effective_vm_type(vm.vm_type, _qemu_flavour(vm, flavour)) if qemu else vm.vm_type
    return ModelContext(
        engine=engine,
        qemu_version=qemu_version if qemu else None,
        kvm_backend=kvm_backend,
        vm_type=vm_type,
        change_vmfd_on_reset=change_vmfd,
    )


def model_for_vm(
    vm: VmSpec,
    ctx: ModelContext,
    initial: Sequence[RegionSpec] | None = None,
    flavour: str | None = None,
) -> MemoryModel:
    """A fresh model of the VM's regions; ``initial`` replaces specs the runner knows better
    (e.g. a backing file it created empty, or hugetlbfs-backed memory); ``flavour`` is what
    QEMU flavour ``auto`` resolved to."""
    overrides = {spec.id: spec for spec in initial or ()}
    specs = [overrides.get(r.id, region_spec(r, flavour)) for r in vm.memory]
    return MemoryModel(specs, ctx)


def qmp_has_no_memory_effect(command: str) -> bool:
    """True for queries and vCPU control; the model does not follow any other command."""
    return command in QMP_NO_MEMORY_EFFECT or command.startswith(("query-", "x-query-"))


def apply_step(model: MemoryModel, step: Step, convert_ok: bool | None = None) -> None:
    """Apply the memory effect of ``step``.

    ``convert_ok`` is what the host actually did with a ``guest.convert``; None takes the
    step's expectation (``expect.outcome == "ok"``). Verifies, reads, waits and sleeps
    change nothing. A QMP command the model does not know makes all memory Unknown, so a
    later verify reports "cannot predict" instead of a wrong hash.
    """
    handler = _HANDLERS.get(step.action)
    if handler is None:  # pragma: no cover - the scenario union and this table go together
        raise KeyError(f"the memory model has no rule for step action {step.action!r}")
    handler(model, step, convert_ok)


def _guest_write(model: MemoryModel, step: Any, _: bool | None) -> None:
    rng = step.range
    model.write(rng.region, rng.offset, rng.size, step.seed)


def _host_write(model: MemoryModel, step: Any, _: bool | None) -> None:
    rng = step.range
    model.host_write(rng.region, rng.offset, rng.size, step.seed)


def _convert(model: MemoryModel, step: Any, convert_ok: bool | None) -> None:
    rng = step.range
    ok = convert_ok if convert_ok is not None else step.expect.outcome == "ok"
    model.convert(rng.region, rng.offset, rng.size, step.to == "private", ok)


def _punch(model: MemoryModel, step: Any, _: bool | None) -> None:
    rng = step.range
    model.punch_hole(rng.region, rng.offset, rng.size)


def _allocate(model: MemoryModel, step: Any, _: bool | None) -> None:
    rng = step.range
    model.allocate(rng.region, rng.offset, rng.size)


def _qmp(model: MemoryModel, step: Any, _: bool | None) -> None:
    if step.expect is not None and step.expect.expects_error:
        return  # a command that fails changes nothing
    command: str = step.command
    if command in QMP_RESET:
        model.reset()
    elif not qmp_has_no_memory_effect(command):
        model.forget(f"QMP command {command!r} may change guest memory in ways not modelled")


def _reset(model: MemoryModel, _step: Any, _: bool | None) -> None:
    model.reset()


def _stop(model: MemoryModel, _step: Any, _: bool | None) -> None:
    model.stop()


def _cont(model: MemoryModel, _step: Any, _: bool | None) -> None:
    model.cont()


#: Unknown reason for bytes that two sub-steps of one guest.parallel changed at once.
RACE: Final = "two vCPUs changed these bytes at the same time (guest.parallel)"


def _parallel(model: MemoryModel, step: Any, convert_ok: bool | None) -> None:
    """R22: each sub-step's effect as if alone (their order does not matter where the ranges
    are disjoint); bytes that a write races on with a sibling's write or conversion are
    Unknown after. A racing verify changes nothing; a conversion's attribute still applies."""
    from qmpgmem.scenario.steps import GuestVerify, racing_pairs

    for sub in step.steps:
        apply_step(model, sub, convert_ok)
    for i, j, lo, hi in racing_pairs(step.steps):
        a, b = step.steps[i], step.steps[j]
        if isinstance(a, GuestVerify) or isinstance(b, GuestVerify):
            continue
        model.forget_range(a.range.region, lo, hi - lo, RACE)


def _nothing(_model: MemoryModel, _step: Any, _: bool | None) -> None:
    """Reads, verifies, waits and sleeps leave memory as it is."""


_HANDLERS: Final[dict[str, Callable[[MemoryModel, Any, bool | None], None]]] = {
    "guest.write": _guest_write,
    "guest.verify": _nothing,
    "guest.convert": _convert,
    "guest.parallel": _parallel,
    "host.read": _nothing,
    "host.write": _host_write,
    "host.gmem_punch_hole": _punch,
    "host.gmem_allocate": _allocate,
    "qmp": _qmp,
    "vm.stop": _stop,
    "vm.cont": _cont,
    "vm.reset": _reset,
    "wait_event": _nothing,
    "sleep": _nothing,
}


# -- the runner's entry point ------------------------------------------------------------------

_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def parse_qemu_version(text: str | None) -> tuple[int, ...] | None:
    """``"10.0.2"`` or ``"QEMU emulator version 11.1.3 (Debian ...)"`` -> (major, minor, micro)."""
    if not text:
        return None
    match = _VERSION.search(text)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


class ScenarioModel:
    """The model of one scenario run, in the terms the runner uses (steps, ranges, hashes)."""

    def __init__(self, model: MemoryModel) -> None:
        self.model = model

    def apply_step(self, step: Step, convert_ok: bool | None = None) -> None:
        apply_step(self.model, step, convert_ok)

    def expected(
        self, region: str, offset: int, size: int, view: View = "guest"
    ) -> tuple[int, str] | None:
        """(hash, description) ``view`` must see, or None when the model cannot predict."""
        want = self.model.expected_hash(region, offset, size, view)
        if want is None:
            return None
        return want, self.model.describe(region, offset, size, view)

    def describe(self, region: str, offset: int, size: int, view: View = "guest") -> str:
        return self.model.describe(region, offset, size, view)


def model_for_run(
    scenario: Scenario, engine: str, host: Any = None, flavour: str | None = None
) -> ScenarioModel:
    """The model for running ``scenario`` on ``engine``; ``host`` may carry ``qemu_version``
    (a version string) and ``kvm_backend`` (as the runner's HostContext does); ``flavour`` is
    the QEMU flavour the engine chose for ``auto`` (without it such regions are Unknown)."""
    if engine not in ("qemu", "kvm"):
        raise ValueError(f"no memory model for engine {engine!r}")
    version = parse_qemu_version(getattr(host, "qemu_version", None))
    backend = getattr(host, "kvm_backend", None) or None
    which: Engine = "qemu" if engine == "qemu" else "kvm"
    ctx = context_for_vm(scenario.vm, which, version, backend, flavour)
    return ScenarioModel(model_for_vm(scenario.vm, ctx, flavour=flavour))
