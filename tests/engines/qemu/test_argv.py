"""The QEMU command line, built without QEMU (its acceptance is tested against the binary
in test_engine.py and tests/engines/test_flavours.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qmpgmem.engines.layout import place_regions
from qmpgmem.engines.qemu.argv import (
    BootImage,
    GuestMemfdPlan,
    boot_kind,
    build_argv,
    pvh_firmware,
)
from qmpgmem.scenario.model import VmSpec

RUN = Path("/run/qmpgmem-x")


def vm(**kw: Any) -> VmSpec:
    spec: dict[str, Any] = {"memory": [{"id": "m0", "size": "16M"}]}
    spec.update(kw)
    return VmSpec.model_validate(spec)


def argv(spec: VmSpec, **kw: Any) -> list[str]:
    args: dict[str, Any] = {
        "qemu_binary": "qemu",
        "accel": "kvm",
        "layout": place_regions(spec.memory),
        "boot": BootImage("rom", Path("/img/rom")),
        "run_dir": RUN,
        "qmp_fd": 7,
        "serial_fd": 9,
    }
    args.update(kw)
    return build_argv(spec, **args)


def values(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_regions_become_numa_nodes_after_the_guest_area() -> None:
    a = argv(vm(memory=[{"id": "m0", "size": "16M"}, {"id": "m1", "size": "8M", "backend": "ram"}]))
    assert values(a, "-numa") == [
        "node,nodeid=0,memdev=qmpgmem-sys",
        "node,nodeid=1,memdev=m0",
        "node,nodeid=2,memdev=m1",
    ]
    assert values(a, "-m") == [f"{4 * 1024 + 16 * 1024 + 8 * 1024}K"]
    objs = values(a, "-object")
    assert objs[1] == "memory-backend-memfd,id=m0,size=16777216"
    assert objs[2] == "memory-backend-ram,id=m1,size=8388608"


def test_the_mailbox_page_is_a_node_of_its_own_inside_the_guest_area() -> None:
    """The guest's area keeps its size, so every region keeps its GPA; its last page is the
    engine's memfd, shared so that both sides see one page."""
    a = argv(vm(), mailbox_path="/proc/self/fd/12")
    assert values(a, "-numa") == [
        "node,nodeid=0,memdev=qmpgmem-sys",
        "node,nodeid=1,memdev=qmpgmem-mbox",
        "node,nodeid=2,memdev=m0",
    ]
    assert values(a, "-m") == [f"{4 * 1024 + 16 * 1024}K"]
    objs = values(a, "-object")
    assert objs[0] == f"memory-backend-ram,id=qmpgmem-sys,size={4 * 1024 * 1024 - 4096}"
    assert objs[1] == (
        "memory-backend-file,id=qmpgmem-mbox,size=4096,mem-path=/proc/self/fd/12,share=on"
    )


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        ({"backend": "memfd", "share": False}, "memory-backend-memfd,id=r,size=4194304,share=off"),
        ({"backend": "file"},
         f"memory-backend-file,id=r,size=4194304,mem-path={RUN}/r.mem,share=on"),
        ({"backend": "file", "path": "/dev/shm/x", "share": False},
         "memory-backend-file,id=r,size=4194304,mem-path=/dev/shm/x,share=off"),
    ],
)  # fmt: skip
def test_backend_objects(region: dict[str, Any], expected: str) -> None:
    a = argv(vm(memory=[{"id": "r", "size": "4M", **region}]))
    assert values(a, "-object")[1] == expected


def test_guest_memfd_plan_shapes_machine_backend_and_objects() -> None:
    plan = GuestMemfdPlan(
        backend_type="memory-backend-memfd",
        backend_props={"guest-memfd": "on"},
        machine_opts={"confidential-guest-support": "cgs0"},
        objects=("sev-snp-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1",),
        bios="/fw/OVMF.amdsev.fd",
        cpu="EPYC-v4",
    )
    spec = vm(machine="q35", memory=[{"id": "g", "size": "64M", "backend": "guest_memfd"}])
    a = argv(spec, gmem=plan, boot=None)
    assert values(a, "-machine") == ["q35,confidential-guest-support=cgs0"]
    assert "memory-backend-memfd,id=g,size=67108864,guest-memfd=on" in values(a, "-object")
    assert "sev-snp-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1" in values(a, "-object")
    assert values(a, "-bios") == ["/fw/OVMF.amdsev.fd"] and values(a, "-cpu") == ["EPYC-v4"]
    # without a guest_memfd region the plan leaves the VM alone
    assert values(argv(vm(), gmem=plan), "-machine") == ["microvm"]


def test_channels_are_inherited_fds_and_the_guest_exits_on_port_f4() -> None:
    a = argv(vm())
    assert "socket,id=qmpgmem-qmp,fd=7" in values(a, "-chardev")
    assert "socket,id=qmpgmem-serial,fd=9" in values(a, "-chardev")
    assert values(a, "-mon") == ["chardev=qmpgmem-qmp,mode=control"]
    assert values(a, "-serial") == ["chardev:qmpgmem-serial"]
    assert "isa-debug-exit,iobase=0xf4,iosize=4" in values(a, "-device")
    assert "-S" in a and "-no-reboot" not in a  # -no-reboot turns system_reset into an exit
    b = argv(vm(), qmp_object=True)
    assert "-mon" not in b
    assert "monitor-qmp,id=qmpgmem-monitor,chardev=qmpgmem-qmp" in values(b, "-object")


def test_boot_paths_and_extra_args() -> None:
    assert boot_kind(vm()) == "rom"
    assert boot_kind(vm(machine="q35")) == "pvh"
    assert boot_kind(vm(guest={"image": "none"})) == "none"
    assert boot_kind(vm(guest={"kernel": "/k"})) == "kernel"
    assert values(argv(vm()), "-bios") == ["/img/rom"]
    a = argv(vm(machine="q35"), boot=BootImage("pvh", Path("/img/elf")))
    assert values(a, "-kernel") == ["/img/elf"] and "-bios" not in a
    k = argv(vm(guest={"kernel": "/k", "initrd": "/i", "append": "console=ttyS0"}), boot=None)
    assert values(k, "-kernel") == ["/k"] and values(k, "-initrd") == ["/i"]
    assert values(k, "-append") == ["console=ttyS0"]
    t = argv(vm(qemu_args=["-d", "guest_errors"]), trace_events=["kvm_set_user_memory"])
    assert t[-2:] == ["-d", "guest_errors"]
    assert values(t, "-trace") == ["enable=kvm_set_user_memory"]


def test_the_pvh_image_boots_through_qboot_on_microvm_where_it_is_installed() -> None:
    installed = {"qboot": "/fw/qboot.rom", "ovmf": "/fw/OVMF.fd"}
    assert pvh_firmware(vm(), installed) == "/fw/qboot.rom"
    assert pvh_firmware(vm(), {"ovmf": "/fw/OVMF.fd"}) is None  # the machine's default then
    assert pvh_firmware(vm(machine="q35"), installed) is None  # SeaBIOS, q35's own
    a = argv(vm(guest={"boot": "pvh"}), boot=BootImage("pvh", Path("/img/elf"), "/fw/qboot.rom"))
    assert values(a, "-bios") == ["/fw/qboot.rom"] and values(a, "-kernel") == ["/img/elf"]
    # a flavour's firmware (OVMF for SNP) and the scenario's own -bios win over it
    gmem_vm = vm(
        guest={"boot": "pvh"}, memory=[{"id": "m0", "size": "16M", "backend": "guest_memfd"}]
    )
    plan = GuestMemfdPlan(backend_type="memory-backend-memfd", bios="/fw/OVMF.amdsev.fd")
    g = argv(gmem_vm, boot=BootImage("pvh", Path("/img/elf"), "/fw/qboot.rom"), gmem=plan)
    assert values(g, "-bios") == ["/fw/OVMF.amdsev.fd"]
    own = vm(guest={"boot": "pvh"}, qemu_args=["-bios", "/mine.bin"])
    o = argv(own, boot=BootImage("pvh", Path("/img/elf"), "/fw/qboot.rom"))
    assert values(o, "-bios") == ["/mine.bin"]


def test_every_option_value_doubles_its_commas() -> None:
    """One escaping rule (issue 13): no name, path, id or event ends its value early."""
    spec = vm(memory=[{"id": "f", "size": "4M", "backend": "file", "path": "x.mem,dump=off"}])
    a = argv(spec, name="qmpgmem-x,debug-threads=on", trace_events=["ev,file=/etc/x"])
    assert values(a, "-name") == ["qmpgmem-x,,debug-threads=on"]
    assert values(a, "-trace") == ["enable=ev,,file=/etc/x"]
    assert f"mem-path={RUN}/x.mem,,dump=off" in values(a, "-object")[1]
    run = Path("/tmp/t,share=off/qmpgmem-run-1")
    b = argv(vm(memory=[{"id": "f", "size": "4M", "backend": "file"}]), run_dir=run)
    assert "mem-path=/tmp/t,,share=off/qmpgmem-run-1/f.mem,share=on" in values(b, "-object")[1]


def test_file_regions_take_the_engines_open_file() -> None:
    spec = vm(memory=[{"id": "f", "size": "4M", "backend": "file"}])
    a = argv(spec, mem_paths={"f": "/proc/self/fd/12"})
    assert values(a, "-object")[1] == (
        "memory-backend-file,id=f,size=4194304,mem-path=/proc/self/fd/12,share=on"
    )
    # QEMU runs in the run directory: its log is relative, the user's kernel absolute
    assert values(a, "-D") == ["qemu-trace.log"]
    k = argv(vm(guest={"kernel": "bzImage"}), boot=None)
    assert values(k, "-kernel") == [str(Path.cwd() / "bzImage")]
