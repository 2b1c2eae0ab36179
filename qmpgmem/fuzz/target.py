"""What the fuzzer may generate on this host and engine, and whether a scenario can run there.

Why derived from the runner and the probe: a generated scenario must never be skipped, and a
shrunk one must never hang. The step actions come from :func:`qmpgmem.runner.step_skip_reason`
(the check the runner's preflight makes), the VM variants from the probed facts through
:func:`qmpgmem.host.evaluate_requirements` (the check behind ``requires``), so the fuzzer and
the runner cannot disagree about what runs here. :meth:`FuzzTarget.problem` adds what neither
checks because a hand-written scenario gets it right by construction: no guest step while the
vCPUs are paused, no ``unchanged`` without an earlier observation of the same range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from pydantic import TypeAdapter

from qmpgmem.errors import SetupError
from qmpgmem.runner import HostContext, resolve_accel, step_skip_reason
from qmpgmem.scenario.model import (
    PAGE_SIZE,
    Backend,
    ConvertExpect,
    GmemFlag,
    GuestConvert,
    GuestVerify,
    GuestWrite,
    HostRead,
    Scenario,
    Step,
    VmCont,
    VmStop,
)

__all__ = [
    "FUZZ_ACTIONS",
    "QEMU_REGION_GRANULE",
    "EngineName",
    "FuzzTarget",
    "VmVariant",
    "fuzz_target",
]

EngineName: TypeAlias = Literal["qemu", "kvm"]

#: Every action the generator knows, in the order reports list them.
FUZZ_ACTIONS: Final = (
    "guest.write",
    "guest.verify",
    "host.read",
    "host.write",
    "guest.convert",
    "host.gmem_punch_hole",
    "host.gmem_allocate",
    "vm.stop",
    "vm.cont",
    "vm.reset",
)
#: What KVM answers KVM_HC_MAP_GPA_RANGE on a VM type without private memory: -KVM_ENOSYS
#: (the kernel's own answer when the exit is off; the KVM engine answers the same).
REFUSED_ON_DEFAULT_VM: Final = -1000

#: QEMU's engine gives ``-m`` in whole MiB and QEMU wants the NUMA nodes to add up to it
#: (and aligns ``-m`` to 8 KiB anyway), so under QEMU regions are whole MiB.
QEMU_REGION_GRANULE: Final = 1 << 20

_STEP: Final[TypeAdapter[Step]] = TypeAdapter(Step)
_SAMPLE_RANGE: Final = {"region": "m0", "offset": 0, "size": 4096}
#: Actions a paused VM cannot run: the guest is not executing. (vm.reset keeps a paused VM
#: paused and vm.stop of a paused VM changes nothing, on both engines: model/lifecycle.py.)
_NEEDS_RUNNING: Final = (GuestWrite, GuestVerify, GuestConvert)

_GMEM_REQUIRES: Final = ("kvm", "user_memory2", "guest_memfd")
_IN_PLACE_REQUIRES: Final = (*_GMEM_REQUIRES, "guest_memfd_mmap", "guest_memfd_init_shared")
_SW_PROTECTED_REQUIRES: Final = (
    *_GMEM_REQUIRES,
    "vm_type:sw-protected",
    "memory_attributes_private:sw-protected",
    "exit_hypercall_map_gpa_range",
    "hypercall_returns",
)


@dataclass(frozen=True)
class VmVariant:
    """One kind of VM the generator builds: VM type, region backends, what a conversion does."""

    name: str
    vm_type: str
    #: Backends to draw regions from (repeats weight the draw).
    backends: tuple[Backend, ...]
    #: KVM_CREATE_GUEST_MEMFD flags of the guest_memfd regions.
    gmem_flags: tuple[GmemFlag, ...] = ()
    requires: tuple[str, ...] = ()
    #: What a guest.convert must answer here; None: the variant generates no conversion.
    convert: ConvertExpect | None = None


@dataclass(frozen=True)
class FuzzTarget:
    """The engine, accelerator, step actions and VM variants a fuzz run draws from."""

    engine: EngineName
    accel: Literal["kvm", "tcg"]
    actions: frozenset[str]
    variants: tuple[VmVariant, ...]
    #: Actions left out here, each with the reason (the runner's or the probe's words).
    left_out: tuple[tuple[str, str], ...] = ()
    #: Region sizes are multiples of this (see ``QEMU_REGION_GRANULE``).
    region_granule: int = PAGE_SIZE
    #: The host the runner and the memory model see (QEMU version, KVM backend, facts).
    host: HostContext = field(
        default_factory=lambda: HostContext(kvm_backend="", kvm_usable=False), compare=False
    )

    def allows(self, action: str) -> bool:
        return action in self.actions

    def problem(self, scenario: Scenario) -> str | None:
        """Why ``scenario`` cannot run (or would hang) on this target, or None.

        Used by the generator's tests and by the shrinker, which must not spend a run (or a
        step timeout) on a candidate that broke an ordering the generator kept.
        """
        for region in scenario.vm.memory:
            if region.size % self.region_granule:
                return (
                    f"region {region.id}: size {region.size:#x} is not a multiple of "
                    f"{self.region_granule:#x} on engine {self.engine}"
                )
        paused = False
        observed: set[tuple[str, int, int]] = set()
        for number, step in enumerate(scenario.steps, 1):
            if step.action not in self.actions:
                return f"step {number}: {step.action} does not run on this target"
            if paused and isinstance(step, _NEEDS_RUNNING):
                return f"step {number}: {step.action} while the VM is paused"
            if isinstance(step, VmStop):
                paused = True
            elif isinstance(step, VmCont):
                paused = False
            elif isinstance(step, GuestVerify | HostRead):
                key = (step.range.region, step.range.offset, step.range.size)
                if step.expect == "unchanged" and key not in observed:
                    return f"step {number}: 'unchanged' without an earlier read of that range"
                observed.add(key)
        return None


def _sample(action: str) -> Step:
    data: dict[str, object] = {"action": action}
    if action.startswith(("guest.", "host.")):
        data["range"] = _SAMPLE_RANGE
    if action in ("guest.write", "host.write"):
        data["seed"] = 1
    if action == "guest.convert":
        data["to"] = "private"
    return _STEP.validate_python(data)


def _unmet(requires: Sequence[str], host: HostContext, vm_type: str) -> str | None:
    """Why the host lacks ``requires``; without probed facts only ``kvm`` can be judged."""
    if host.facts is None:
        unknown = [r for r in requires if r != "kvm"]
        if unknown:
            return f"needs {', '.join(unknown)}; the host was not probed"
        return None if host.kvm_usable or "kvm" not in requires else "needs kvm"
    from qmpgmem.host import evaluate_requirements

    qemu = host.facts.qemu_for(host.qemu_binary) if host.qemu_binary else None
    return evaluate_requirements(list(requires), host.facts, qemu, vm_type=vm_type)


def fuzz_target(engine: str, host: HostContext, accel: str | None = None) -> FuzzTarget:
    """What ``engine`` can run on ``host``; ``accel`` overrides auto (QEMU engine only).

    :raise SetupError: the engine cannot run here at all (no /dev/kvm for the KVM engine,
        an unknown engine name).
    """
    if engine not in ("qemu", "kvm"):
        raise SetupError(f"unknown engine {engine!r}; choose qemu or kvm")
    if engine == "kvm":
        if not host.kvm_usable:
            raise SetupError(f"the kvm engine needs /dev/kvm: {host.kvm_unusable or 'not usable'}")
        resolved = "kvm"
    else:
        resolved = resolve_accel(accel or "auto", host)
        if resolved == "kvm" and not host.kvm_usable:
            raise SetupError(f"accel kvm needs /dev/kvm: {host.kvm_unusable or 'not usable'}")
    if resolved not in ("kvm", "tcg"):
        raise SetupError(f"unknown accelerator {resolved!r}; choose kvm, tcg or auto")
    use_accel: Literal["kvm", "tcg"] = "kvm" if resolved == "kvm" else "tcg"

    actions: set[str] = set()
    left_out: list[tuple[str, str]] = []
    for action in FUZZ_ACTIONS:
        why = step_skip_reason(_sample(action), engine, use_accel, host)
        if why is None:
            actions.add(action)
        else:
            left_out.append((action, why))
    if not {"vm.stop", "vm.cont"} <= actions:  # one without the other leaves a VM paused
        for action in ("vm.stop", "vm.cont"):
            if action in actions:
                actions.discard(action)
                left_out.append((action, "vm.stop and vm.cont come as a pair"))

    base = ("kvm",) if use_accel == "kvm" else ()
    refused = ConvertExpect(outcome="refused", code=REFUSED_ON_DEFAULT_VM)
    convert = "guest.convert" in actions
    if convert:
        base = (*base, "hypercall_returns")
    variants: list[VmVariant] = []
    if engine == "qemu":
        variants.append(
            VmVariant(
                "plain",
                "default",
                ("memfd", "memfd", "ram"),
                requires=base,
                convert=refused if convert else None,
            )
        )
    else:
        in_place = VmVariant(
            "gmem-in-place",
            "default",
            ("guest_memfd", "guest_memfd", "guest_memfd", "memfd"),
            gmem_flags=("mmap", "init_shared"),
            requires=tuple(dict.fromkeys((*base, *_IN_PLACE_REQUIRES))),
            convert=refused if convert else None,
        )
        why = _unmet(in_place.requires, host, in_place.vm_type)
        if why is None:
            variants.append(in_place)
        else:
            left_out.append(("guest_memfd regions", why))
            variants.append(
                VmVariant(
                    "plain",
                    "default",
                    ("memfd", "memfd", "ram"),
                    requires=base,
                    convert=refused if convert else None,
                )
            )
        if convert:
            split = VmVariant(
                "gmem-split-sw-protected",
                "sw-protected",
                ("guest_memfd",),
                gmem_flags=(),
                requires=tuple(dict.fromkeys((*base, *_SW_PROTECTED_REQUIRES))),
                convert=ConvertExpect(outcome="ok"),
            )
            why = _unmet(split.requires, host, split.vm_type)
            if why is None:
                variants.append(split)
            else:
                left_out.append(("sw-protected VMs (conversions that succeed)", why))
    return FuzzTarget(
        engine="qemu" if engine == "qemu" else "kvm",
        accel=use_accel,
        actions=frozenset(actions),
        variants=tuple(variants),
        left_out=tuple(left_out),
        region_granule=QEMU_REGION_GRANULE if engine == "qemu" else PAGE_SIZE,
        host=host,
    )
