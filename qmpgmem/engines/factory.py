"""Build the engine a scenario run asks for, from the scenario's VM and what the host has.

Why a factory apart from the runner: the runner knows scenarios and statuses, not how each
engine is configured (which QEMU binary, which boot image, which guest_memfd flavour).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qmpgmem.engines.base import Engine
from qmpgmem.engines.qemu.argv import GuestMemfdPlan
from qmpgmem.errors import SetupError, UnsupportedStep

if TYPE_CHECKING:
    from qmpgmem.runner import ScenarioRun


def build_engine(run: ScenarioRun) -> Engine:
    vm = run.sc.vm
    if run.options.engine == "kvm":
        from qmpgmem.engines.kvm.engine import KvmEngine

        return KvmEngine(
            vm,
            run_dir_parent=None,
            boot_timeout=run.sc.timeouts.boot,
            step_timeout=run.sc.timeouts.step,
        )
    if run.options.engine != "qemu":
        raise SetupError(f"unknown engine {run.options.engine!r}; choose qemu or kvm")

    from qmpgmem.engines.qemu.argv import boot_kind
    from qmpgmem.engines.qemu.engine import QemuEngine
    from qmpgmem.guest.image import guest_image

    binary = run.qemu_binary
    if binary is None:
        raise SetupError("no QEMU binary: install qemu-system-x86 (make setup) or pass --qemu")
    kind = boot_kind(vm)
    image = None
    if kind == "rom":
        image = guest_image("rom")
    elif kind == "pvh":
        image = guest_image("pvh")
    gmem_plan = None
    if any(r.backend == "guest_memfd" for r in vm.memory):
        gmem_plan = _gmem_plan(run)
    facts = run.host.facts.qemu_for(binary) if run.host.facts is not None else None
    return QemuEngine(
        vm,
        qemu_binary=binary,
        accel=run.accel,
        boot_image=image,
        boot_timeout=run.sc.timeouts.boot,
        keep_run_dir=True,  # the runner keeps it for a failed run, removes it otherwise
        gmem_plan=gmem_plan,
        trace_events=sorted({t.event for t in run.sc.expect_trace}),
        label=f"qmpgmem-{run.sc.name}"[:60],
        qmp_object=facts is not None and facts.has_type("monitor-qmp"),
    )


def _gmem_plan(run: ScenarioRun) -> GuestMemfdPlan:
    """The argv part of the flavour the runner chose (``ScenarioRun.plan_guest_memfd``)."""
    plan = run.gmem_plan
    if plan is None:
        raise UnsupportedStep("guest_memfd memory needs the host probe (no QEMU facts)")
    if plan.skip_reason:
        raise UnsupportedStep(plan.skip_reason)
    return GuestMemfdPlan(
        backend_type=plan.backend_type,
        backend_props=dict(plan.backend_props),
        machine_opts=dict(plan.machine_opts),
        objects=tuple(plan.objects),
        bios=plan.bios,
        cpu=plan.cpu,
    )
