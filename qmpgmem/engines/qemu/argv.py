"""The QEMU command line for a scenario's VM: a pure function, tested without QEMU.

One escaping rule (docs/security.md): every value that enters a QEMU option string
(``key=value,...``, QemuOpts and QOM property lists alike) goes through :func:`opt_value`,
which doubles commas as QEMU's own parser expects, so no name, id, path or event can end
its value and start another option. Values that are whole argv words of their own
(``-kernel PATH``) need no escaping: no shell is ever involved.

Why NUMA nodes: ``-numa node,memdev=`` lays memory backends back to back from GPA 0 on every
x86 machine type (microvm included), so the guest's own area and each scenario region get a
backend of their own — visible to ``query-memdev`` with the scenario's ids and sizes — at the
addresses :mod:`qmpgmem.engines.layout` computes. The guest's mailbox page (the last page of its
area, guest/mailbox.py) is a node of its own when the engine maps it: a shared file backend on
a memfd of the engine's, so that this process and the guest see the same page.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from qmpgmem.engines.layout import SYS_REGION_ID, Layout
from qmpgmem.guest.mailbox import MBOX_GPA, MBOX_SIZE
from qmpgmem.guest.protocol import DEBUG_EXIT_PORT, SYS_SIZE
from qmpgmem.rundir import backing_file_path
from qmpgmem.scenario.model import Region, VmSpec

QMP_CHARDEV = "qmpgmem-qmp"
#: QEMU's -D log, in the run directory (QEMU's working directory)
TRACE_LOG = "qemu-trace.log"
SERIAL_CHARDEV = "qmpgmem-serial"
MAILBOX_ID = "qmpgmem-mbox"


@dataclass(frozen=True)
class GuestMemfdPlan:
    """How this QEMU binary puts RAM on guest_memfd (from engines/qemu/flavours.py)."""

    backend_type: str = "memory-backend-memfd"
    backend_props: dict[str, str] = field(default_factory=dict)
    machine_opts: dict[str, str] = field(default_factory=dict)
    objects: tuple[str, ...] = ()
    bios: str | None = None
    cpu: str | None = None  # e.g. TDX needs a CPU model with the TDX features


@dataclass(frozen=True)
class BootImage:
    kind: str  # "rom" (-bios) or "pvh" (-kernel)
    path: Path
    #: the firmware a "pvh" image boots through (-bios); None: the machine's default
    firmware: str | None = None


def boot_kind(vm: VmSpec) -> str:
    """The micro guest's boot path: the flat ROM on microvm, PVH through firmware elsewhere."""
    if vm.guest.kernel is not None:
        return "kernel"
    if vm.guest.image == "none":
        return "none"
    if vm.guest.boot != "auto":
        return vm.guest.boot
    return "rom" if vm.machine == "microvm" else "pvh"


def pvh_firmware(vm: VmSpec, firmware: Mapping[str, str]) -> str | None:
    """The firmware the micro guest's PVH ELF boots through, when not the machine's default:
    qboot on microvm where it is installed (``firmware``: :func:`qmpgmem.host.firmware.
    find_firmware` of the binary). Why: microvm's default on Debian is a SeaBIOS build that
    costs ~2.8 s a boot under kvm_pvm (docs/performance.md); upstream QEMU's default there is
    qboot itself."""
    return firmware.get("qboot") if vm.machine == "microvm" else None


def opt_value(value: str) -> str:
    """``value`` as one value of a QEMU option string: commas doubled (``a,,b``)."""
    return value.replace(",", ",,")


def option_string(head: str, props: Mapping[str, str]) -> str:
    """``head,key=value,...`` with every value escaped (:func:`opt_value`); a key that
    would split the string is refused."""
    for key in props:
        if "," in key or "=" in key:
            raise ValueError(f"not a QEMU property name: {key!r}")
    return ",".join([opt_value(head), *(f"{k}={opt_value(v)}" for k, v in props.items())])


def backend_object(
    region: Region, run_dir: Path, gmem: GuestMemfdPlan | None, mem_path: str | None = None
) -> str:
    """The ``-object`` value of one region's memory backend.

    ``mem_path``: where QEMU opens a ``file`` region's backing file; the engine passes
    ``/proc/self/fd/N`` of the file it opened itself (``rundir.open_backing_file``).
    """
    props: dict[str, str] = {"id": region.id, "size": str(region.size)}
    if region.backend == "ram":
        kind = "memory-backend-ram"
    elif region.backend == "memfd":
        kind = "memory-backend-memfd"
    elif region.backend == "file":
        kind = "memory-backend-file"
        props["mem-path"] = mem_path or str(backing_file_path(run_dir, region.id, region.path))
    else:  # guest_memfd: the flavour decides the backend type and its extra properties
        plan = gmem or GuestMemfdPlan()
        kind = plan.backend_type
        props.update(plan.backend_props)
    if region.share is not None:
        props["share"] = "on" if region.share else "off"
    elif region.backend == "file":
        props["share"] = "on"
    return option_string(kind, props)


def build_argv(
    vm: VmSpec,
    *,
    qemu_binary: str,
    accel: str,
    layout: Layout,
    boot: BootImage | None,
    run_dir: Path,
    qmp_fd: int,
    serial_fd: int,
    gmem: GuestMemfdPlan | None = None,
    name: str = "qmpgmem",
    trace_events: list[str] | tuple[str, ...] = (),
    qmp_object: bool = False,
    mem_paths: Mapping[str, str] | None = None,
    mailbox_path: str | None = None,
) -> list[str]:
    """Everything QEMU needs, in a stable order; no shell is ever involved.

    ``qmp_object``: the binary has the ``monitor-qmp`` QOM type (QEMU 11.x), which replaces
    the deprecated ``-mon``. ``mem_paths``: region id -> ``mem-path`` of its backing file.
    ``mailbox_path``: the ``mem-path`` of the mailbox page's memfd (None: no node of its own).
    Relative paths of the scenario's own (``guest.kernel``, ``initrd``) are made absolute
    against the current directory: QEMU runs in the run directory.
    """
    mem_paths = mem_paths or {}
    uses_gmem = any(r.backend == "guest_memfd" for r in vm.memory)
    machine_opts: dict[str, str] = dict(gmem.machine_opts) if (gmem and uses_gmem) else {}
    argv = [
        qemu_binary,
        "-name", opt_value(name),
        "-machine", option_string(vm.machine, machine_opts),
        "-accel", accel,
        "-smp", str(vm.vcpus),
        "-m", f"{layout.total_size // 1024}K",
        "-nodefaults", "-no-user-config", "-display", "none",
        "-S",
    ]  # fmt: skip
    if mailbox_path is None:
        system = [(SYS_REGION_ID, f"memory-backend-ram,id={SYS_REGION_ID},size={SYS_SIZE}")]
    else:  # the guest's area as before, its last page on the engine's memfd
        assert MBOX_GPA + MBOX_SIZE == SYS_SIZE
        system = [
            (SYS_REGION_ID, f"memory-backend-ram,id={SYS_REGION_ID},size={MBOX_GPA}"),
            (MAILBOX_ID, option_string("memory-backend-file", {
                "id": MAILBOX_ID, "size": str(MBOX_SIZE), "mem-path": mailbox_path,
                "share": "on"})),
        ]  # fmt: skip
    for nodeid, (memdev, obj) in enumerate(system):
        argv += ["-object", obj, "-numa", f"node,nodeid={nodeid},memdev={memdev}"]
    for nodeid, region in enumerate(vm.memory, start=len(system)):
        argv += ["-object", backend_object(region, run_dir, gmem, mem_paths.get(region.id))]
        argv += ["-numa", f"node,nodeid={nodeid},memdev={opt_value(region.id)}"]
    if gmem and uses_gmem:
        for obj in gmem.objects:
            argv += ["-object", obj]
    argv += [
        "-chardev", f"socket,id={QMP_CHARDEV},fd={qmp_fd}",
        *(
            ["-object", f"monitor-qmp,id=qmpgmem-monitor,chardev={QMP_CHARDEV}"]
            if qmp_object
            else ["-mon", f"chardev={QMP_CHARDEV},mode=control"]
        ),
        "-chardev", f"socket,id={SERIAL_CHARDEV},fd={serial_fd}",
        "-serial", f"chardev:{SERIAL_CHARDEV}",
        "-device", f"isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=4",
        # Relative: QEMU runs in the run directory, and -D takes no '%' but %d in a path
        "-D", TRACE_LOG,
    ]  # fmt: skip
    # On the command line, not over QMP: memory slots are set up before QMP exists.
    for event in trace_events:
        argv += ["-trace", f"enable={opt_value(event)}"]
    if gmem and uses_gmem and gmem.bios:
        argv += ["-bios", gmem.bios]
    if gmem and uses_gmem and gmem.cpu:
        argv += ["-cpu", gmem.cpu]
    if vm.guest.kernel is not None:
        argv += ["-kernel", os.path.abspath(vm.guest.kernel)]
        if vm.guest.initrd:
            argv += ["-initrd", os.path.abspath(vm.guest.initrd)]
        if vm.guest.append:
            argv += ["-append", vm.guest.append]
    elif boot is not None and boot.kind == "rom":
        argv += ["-bios", str(boot.path)]
    elif boot is not None:
        if boot.firmware and not (gmem and uses_gmem and gmem.bios) and "-bios" not in vm.qemu_args:
            argv += ["-bios", boot.firmware]
        argv += ["-kernel", str(boot.path)]
    argv += list(vm.qemu_args)
    return argv
