"""Ways to put a QEMU guest's RAM on guest_memfd, and whether this binary and host can.

Why several flavours: no released QEMU backs an ordinary VM with guest_memfd. It does so
only when a confidential-guest object requires it — ``sev-snp-guest`` (QEMU 9.1+) and
``tdx-guest`` (10.1+) — and then every memory backend gets a private guest_memfd
automatically (hw/core/machine.c, ``require_guest_memfd``). Out-of-tree trees offered
``memory-backend-memfd-private`` (with a ``sw-protected-vm`` object), and a proposal adds
``memory-backend-memfd,guest-memfd=on`` (init-shared guest_memfd for ordinary VMs). Each is a
:class:`FlavourPlan`: the ``-machine``/``-object`` pieces it needs, or a precise reason why
this binary or host cannot do it.

:func:`plan_flavour` is pure (facts in, plan out). :func:`refusal_of` then asks the real
binary: on a host whose KVM lacks the VM type, QEMU parses the whole command line and is
refused at accelerator setup with its own words (``vm-type SEV-SNP not supported by KVM``);
:func:`confirm_flavour` records those words in the skip reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
from dataclasses import dataclass, field
from typing import Final

from qemu.qmp import QMPClient, QMPError

from qmpgmem.engines.qemu.argv import option_string
from qmpgmem.engines.qemu.process import QemuProcess
from qmpgmem.errors import ScenarioError, VMLaunchError
from qmpgmem.host.facts import KvmFacts, QemuFacts

__all__ = [
    "AUTO_ORDER",
    "FLAVOURS",
    "FlavourPlan",
    "confirm_flavour",
    "plan_argv",
    "plan_flavour",
    "plan_flavour_confirmed",
    "refusal_of",
]

log = logging.getLogger(__name__)

#: The flavours a scenario can ask for (plus "auto").
FLAVOURS: Final = ("sev-snp", "tdx", "memfd-private", "guest-memfd-property")
#: What "auto" tries, in order. The non-confidential flavour first: its memory stays
#: readable by the host (init-shared guest_memfd), which is what most checks want to see.
AUTO_ORDER: Final = ("guest-memfd-property", "sev-snp", "tdx", "memfd-private")

#: The id of the confidential-guest object the machine's confidential-guest-support names.
CGS_ID: Final = "cgs0"
#: C-bit position when CPUID 0x8000001F is unreadable: 51 on AMD EPYC (Milan, Genoa).
DEFAULT_CBITPOS: Final = 51
#: QEMU checks 1 <= reduced-phys-bits <= the host's value; 1 is what AMD's guides use.
DEFAULT_REDUCED_PHYS_BITS: Final = 1


@dataclass(frozen=True)
class FlavourPlan:
    """How to build guest_memfd-backed RAM one way, or why this binary/host cannot."""

    name: str
    #: the machine type the flavour needs (None: the engine's choice)
    machine: str | None = None
    machine_opts: dict[str, str] = field(default_factory=dict)
    #: each a complete ``-object`` argument
    objects: list[str] = field(default_factory=list)
    backend_type: str = "memory-backend-memfd"
    backend_props: dict[str, str] = field(default_factory=dict)
    bios: str | None = None
    #: a ``-cpu`` model the flavour needs (None: QEMU's default)
    cpu: str | None = None
    skip_reason: str | None = None
    #: the binary has every type and property the plan names, so its argv parses and any
    #: refusal comes from KVM or the host (False: the reason is the binary's)
    binary_supports: bool = True

    @property
    def usable(self) -> bool:
        return self.skip_reason is None


def _who(qemu: QemuFacts) -> str:
    return f"{qemu.binary} (QEMU {qemu.version_str})"


def _kvm_reasons(kvm: KvmFacts, vm_type: str) -> list[str]:
    if not kvm.available:
        return [f"/dev/kvm unavailable ({kvm.unavailable_reason})"]
    if vm_type in kvm.vm_types:
        return []
    return [f"KVM lacks VM type {vm_type}: {kvm.vm_types_text()}, backend {kvm.backend or 'none'}"]


def _binary_reasons(qemu: QemuFacts, qom_type: str, since: str) -> list[str]:
    reasons = []
    if "kvm" not in qemu.accelerators:
        reasons.append(f"{_who(qemu)} has no kvm accelerator")
    if not qemu.has_type(qom_type):
        reasons.append(f"{_who(qemu)} has no QOM type {qom_type} ({since})")
    return reasons


def _module_reason(kvm: KvmFacts, param: str, module: str) -> list[str]:
    value = getattr(kvm, param)
    if value:
        return []
    if value is None:
        return [f"{module} not loaded"]
    return [f"{module} parameter {param}=N"]


def _join(reasons: list[str]) -> str | None:
    return "; ".join(reasons) if reasons else None


def _sev_snp(qemu: QemuFacts, kvm: KvmFacts) -> FlavourPlan:
    binary = _binary_reasons(qemu, "sev-snp-guest", "sev-snp-guest is in QEMU 9.1 and later")
    host = _kvm_reasons(kvm, "sev-snp")
    if host:
        host += _module_reason(kvm, "sev_snp", "kvm_amd")
    bios = qemu.firmware.get("ovmf-amdsev") or qemu.firmware.get("ovmf")
    if bios is None:
        host.append("no SEV-SNP capable OVMF (ovmf-amdsev or ovmf) found")
    cbitpos = kvm.cbitpos or DEFAULT_CBITPOS
    reduced = kvm.reduced_phys_bits or DEFAULT_REDUCED_PHYS_BITS
    return FlavourPlan(
        name="sev-snp",
        machine="q35",
        machine_opts={"confidential-guest-support": CGS_ID},
        objects=[f"sev-snp-guest,id={CGS_ID},cbitpos={cbitpos},reduced-phys-bits={reduced}"],
        backend_type="memory-backend-memfd",
        bios=bios,
        skip_reason=_join(binary + host),
        binary_supports=not binary,
    )


def _tdx(qemu: QemuFacts, kvm: KvmFacts) -> FlavourPlan:
    binary = _binary_reasons(qemu, "tdx-guest", "tdx-guest is in QEMU 10.1 and later")
    host = _kvm_reasons(kvm, "tdx")
    if host:
        host += _module_reason(kvm, "tdx", "kvm_intel")
    bios = qemu.firmware.get("ovmf-inteltdx") or qemu.firmware.get("ovmf")
    if bios is None:
        host.append("no TDX capable OVMF (ovmf-inteltdx or ovmf) found")
    return FlavourPlan(
        name="tdx",
        machine="q35",
        # kernel-irqchip=split is required and QEMU picks it itself (tdx_kvm_init)
        machine_opts={"confidential-guest-support": CGS_ID},
        # sept-ve-disable=on is tdx-guest's default
        objects=[f"tdx-guest,id={CGS_ID}"],
        backend_type="memory-backend-memfd",
        bios=bios,
        cpu="host",  # TDX refuses named CPU models (tdx_cpu_instance_init)
        skip_reason=_join(binary + host),
        binary_supports=not binary,
    )


def _memfd_private(qemu: QemuFacts, kvm: KvmFacts) -> FlavourPlan:
    binary = _binary_reasons(
        qemu,
        "memory-backend-memfd-private",
        "it existed only in out-of-tree UPM development trees",
    )
    objects: list[str] = []
    machine_opts: dict[str, str] = {}
    host: list[str] = []
    if qemu.has_type("memory-backend-memfd-private"):
        if qemu.has_type("sw-protected-vm"):
            objects = [f"sw-protected-vm,id={CGS_ID}"]
            machine_opts = {"confidential-guest-support": CGS_ID}
            host = _kvm_reasons(kvm, "sw-protected")
        else:
            binary.append(
                f"{_who(qemu)} has memory-backend-memfd-private but no sw-protected-vm "
                "object to make the VM private; use flavour sev-snp or tdx"
            )
    return FlavourPlan(
        name="memfd-private",
        machine="q35",
        machine_opts=machine_opts,
        objects=objects,
        backend_type="memory-backend-memfd-private",
        skip_reason=_join(binary + host),
        binary_supports=not binary,
    )


def _guest_memfd_property(qemu: QemuFacts, kvm: KvmFacts) -> FlavourPlan:
    binary: list[str] = []
    if "kvm" not in qemu.accelerators:
        binary.append(f"{_who(qemu)} has no kvm accelerator")
    if not qemu.has_backend_prop("memory-backend-memfd", "guest-memfd"):
        binary.append(
            f"{_who(qemu)} memory-backend-memfd has no guest-memfd property "
            "(an unmerged proposal; no released QEMU has it)"
        )
    host: list[str] = []
    if not kvm.available:
        host.append(f"/dev/kvm unavailable ({kvm.unavailable_reason})")
    elif kvm.cap("KVM_CAP_GUEST_MEMFD") <= 0:
        host.append("KVM_CAP_GUEST_MEMFD=0 on /dev/kvm")
    else:
        missing = [f for f in ("mmap", "init_shared") if f not in kvm.gmem_flags]
        if missing:
            value = kvm.cap("KVM_CAP_GUEST_MEMFD_FLAGS")
            host.append(
                f"KVM_CAP_GUEST_MEMFD_FLAGS={value:#x} lacks {', '.join(missing)} "
                "(an init-shared guest_memfd needs GUEST_MEMFD_FLAG_MMAP|INIT_SHARED)"
            )
    return FlavourPlan(
        name="guest-memfd-property",
        backend_type="memory-backend-memfd",
        backend_props={"guest-memfd": "on"},
        skip_reason=_join(binary + host),
        binary_supports=not binary,
    )


_PLANNERS: Final = {
    "sev-snp": _sev_snp,
    "tdx": _tdx,
    "memfd-private": _memfd_private,
    "guest-memfd-property": _guest_memfd_property,
}


def _auto(plans: list[FlavourPlan]) -> FlavourPlan:
    for plan in plans:
        if plan.usable:
            return plan
    why = " | ".join(f"{p.name}: {p.skip_reason}" for p in plans)
    return FlavourPlan(
        name="auto",
        skip_reason=f"no guest_memfd flavour works here: {why}",
        binary_supports=False,
    )


def plan_flavour(flavour: str, qemu: QemuFacts, kvm: KvmFacts) -> FlavourPlan:
    """The plan for ``flavour`` ("auto": the first of :data:`AUTO_ORDER` that is usable).

    :raise ScenarioError: the flavour is not one of :data:`FLAVOURS` or "auto".
    """
    if flavour == "auto":
        return _auto([_PLANNERS[name](qemu, kvm) for name in AUTO_ORDER])
    planner = _PLANNERS.get(flavour)
    if planner is None:
        known = ", ".join((*FLAVOURS, "auto"))
        raise ScenarioError(f"unknown guest_memfd flavour {flavour!r}; known: {known}")
    return planner(qemu, kvm)


def plan_argv(
    plan: FlavourPlan,
    *,
    ram_size: str = "64M",
    backend_id: str = "ram0",
    machine: str = "q35",
) -> list[str]:
    """The QEMU arguments of a plan (no binary, no -S/monitor): machine, objects, RAM, bios.

    ``machine`` is used when the plan leaves the machine to the engine.
    """
    argv = ["-accel", "kvm"]
    argv += [
        "-machine",
        option_string(plan.machine or machine, {**plan.machine_opts, "memory-backend": backend_id}),
    ]
    argv += ["-m", ram_size]
    for obj in plan.objects:
        argv += ["-object", obj]
    argv += [
        "-object",
        option_string(
            plan.backend_type, {"id": backend_id, "size": ram_size, **plan.backend_props}
        ),
    ]
    if plan.cpu is not None:
        argv += ["-cpu", plan.cpu]
    if plan.bios is not None:
        argv += ["-bios", plan.bios]
    return argv


def _refusal_text(output: str) -> str:
    """QEMU's error lines (warnings dropped), program name prefix removed, joined."""
    lines = []
    for line in output.splitlines():
        text = line.strip()
        if not text:
            continue
        prog, sep, rest = text.partition(": ")
        if sep and prog.startswith("qemu"):
            text = rest
        if text.startswith("warning:") or ": warning: " in text:  # e.g. 11.x: -mon deprecated
            continue
        lines.append(text)
    return "; ".join(lines) if lines else "(QEMU exited without a message)"


async def _greeting_arrives(sock: socket.socket) -> bool:
    """Wait until ``sock`` is readable; True if data (QMP's greeting) is there, False on EOF."""
    loop = asyncio.get_running_loop()
    readable: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not readable.done():
            readable.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await readable
    finally:
        loop.remove_reader(sock.fileno())
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except BlockingIOError:  # spurious wakeup: treat as "still coming"
        return True
    except OSError:
        return False


async def refusal_of(plan: FlavourPlan, qemu_binary: str, *, timeout: float = 15.0) -> str | None:
    """Launch ``qemu_binary`` paused with the plan's argv; QEMU's refusal, or None if accepted.

    None means QEMU came up paused (``-S``) with the configuration, i.e. this host can run
    the flavour. The process runs in its own group and is always killed.
    """
    proc = QemuProcess()
    argv = [*proc.paused_monitor_argv(qemu_binary), *plan_argv(plan)]
    client = QMPClient(f"flavour:{plan.name}")
    try:
        async with asyncio.timeout(timeout):
            await proc.launch(argv)
            # KVM refuses at accelerator setup, before QEMU opens its monitor: the socket
            # then reads EOF instead of a greeting.
            if not await _greeting_arrives(proc.qmp_sock):
                await proc.wait()
                return _refusal_text(proc.output())
            try:
                await client.connect(proc.qmp_sock)
                await client.execute("query-status")
            except (QMPError, EOFError, OSError):  # it greeted, then died: still a refusal
                await proc.wait()
                return _refusal_text(proc.output())
            log.info("QEMU accepted flavour %s: %s", plan.name, " ".join(argv))
            return None
    except TimeoutError as exc:
        raise VMLaunchError(
            f"QEMU neither refused nor accepted flavour {plan.name} within {timeout} s",
            argv,
            proc.output(),
        ) from exc
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
        await proc.close()


async def confirm_flavour(plan: FlavourPlan, qemu: QemuFacts) -> FlavourPlan:
    """Ask the real binary about a plan it can express; record a refusal in the skip reason.

    A plan the binary cannot express is returned as it is (its argv would not parse).
    """
    if not plan.binary_supports:
        return plan
    refusal = await refusal_of(plan, qemu.binary)
    if refusal is None:
        if plan.skip_reason is not None:
            log.warning("QEMU accepted flavour %s though: %s", plan.name, plan.skip_reason)
        return plan
    said = f"QEMU refused it: {refusal}"
    reason = f"{plan.skip_reason}; {said}" if plan.skip_reason else said
    return dataclasses.replace(plan, skip_reason=reason)


async def plan_flavour_confirmed(flavour: str, qemu: QemuFacts, kvm: KvmFacts) -> FlavourPlan:
    """:func:`plan_flavour`, each candidate confirmed with the real binary (auto: first that
    QEMU accepts)."""
    if flavour != "auto":
        return await confirm_flavour(plan_flavour(flavour, qemu, kvm), qemu)
    plans = []
    for name in AUTO_ORDER:
        plan = await confirm_flavour(plan_flavour(name, qemu, kvm), qemu)
        if plan.usable:
            return plan
        plans.append(plan)
    return _auto(plans)
