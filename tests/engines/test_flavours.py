# ruff: noqa: E501  (the tables read best one row per line)
"""guest_memfd flavours: the plan for each host/binary shape, and the real binary's verdict.

The first half is pure (facts written out, plans checked). The second half launches the real
QEMU with each plan's argv: a plan the binary can express must get through option parsing
and be stopped — on a host whose KVM lacks the VM type — by KVM at accelerator setup, in
QEMU's own words; a plan it cannot express must fail on exactly the thing the skip reason
names. Extra binaries (e.g. a private QEMU 11.1) join via QMPGMEM_EXTRA_QEMU=path[:path].
"""

from __future__ import annotations

import dataclasses
import os
import re

import pytest

from qmpgmem.engines.qemu.flavours import (
    AUTO_ORDER,
    FLAVOURS,
    FlavourPlan,
    confirm_flavour,
    plan_argv,
    plan_flavour,
    plan_flavour_confirmed,
    refusal_of,
)
from qmpgmem.errors import ScenarioError
from qmpgmem.host.facts import KvmFacts, QemuFacts
from qmpgmem.host.kernel import probe_kvm
from qmpgmem.host.qemu import probe_qemu

# ---- facts of the host and binary shapes ---------------------------------------------------
PVM = KvmFacts(
    available=True,
    kernel_release="6.18.44",
    backend="kvm_pvm",
    caps={"KVM_CAP_GUEST_MEMFD": 1, "KVM_CAP_VM_TYPES": 1, "KVM_CAP_GUEST_MEMFD_FLAGS": 3},
    vm_types=["default"],
    gmem_flags=["mmap", "init_shared"],
    memory_attributes={"default": []},
)
SNP = PVM.model_copy(
    update={
        "backend": "kvm_amd",
        "vm_types": ["default", "sev", "sev-es", "sev-snp"],
        "sev_snp": True,
        "cbitpos": 47,
        "reduced_phys_bits": 5,
    }
)
TDX = PVM.model_copy(
    update={
        "backend": "kvm_intel",
        "vm_types": ["default", "sw-protected", "tdx"],
        "gmem_flags": ["mmap"],
        "caps": {**PVM.caps, "KVM_CAP_GUEST_MEMFD_FLAGS": 1},
        "tdx": True,
    }
)
Q10 = QemuFacts(
    binary="qemu-10.0",
    version=(10, 0, 2),
    version_str="10.0.2",
    accelerators=["kvm", "tcg"],
    qom_types=["memory-backend-memfd", "sev-guest", "sev-snp-guest"],
    backend_props={"memory-backend-memfd": ["share", "size"]},
    firmware={"ovmf": "/usr/share/ovmf/OVMF.fd", "ovmf-amdsev": "/fw/OVMF.amdsev.fd"},
)
Q11 = Q10.model_copy(
    update={
        "binary": "qemu-11.1",
        "version": (11, 1, 3),
        "version_str": "11.1.3",
        "qom_types": [*Q10.qom_types, "tdx-guest"],
        "firmware": {**Q10.firmware, "ovmf-inteltdx": "/fw/OVMF.inteltdx.fd"},
    }
)
QGMEM = Q10.model_copy(
    update={"backend_props": {"memory-backend-memfd": ["guest-memfd", "share", "size"]}}
)
QUPM = Q10.model_copy(
    update={"qom_types": [*Q10.qom_types, "memory-backend-memfd-private", "sw-protected-vm"]}
)


def test_sev_snp_on_an_snp_host() -> None:
    plan = plan_flavour("sev-snp", Q10, SNP)
    assert plan == FlavourPlan(
        name="sev-snp",
        machine="q35",
        machine_opts={"confidential-guest-support": "cgs0"},
        objects=["sev-snp-guest,id=cgs0,cbitpos=47,reduced-phys-bits=5"],  # from CPUID
        backend_type="memory-backend-memfd",
        bios="/fw/OVMF.amdsev.fd",
    )
    no_cpuid = SNP.model_copy(update={"cbitpos": None, "reduced_phys_bits": None})
    assert plan_flavour("sev-snp", Q10, no_cpuid).objects == [
        "sev-snp-guest,id=cgs0,cbitpos=51,reduced-phys-bits=1"
    ]


@pytest.mark.parametrize(
    ("flavour", "kvm", "qemu", "binary_supports", "reason"),
    [
        ("sev-snp", PVM, Q10, True, "KVM lacks VM type sev-snp: KVM_CAP_VM_TYPES=0x1 (default), backend kvm_pvm; kvm_amd not loaded"),
        ("sev-snp", SNP, Q10.model_copy(update={"qom_types": ["memory-backend-memfd"]}), False, "qemu-10.0 (QEMU 10.0.2) has no QOM type sev-snp-guest (sev-snp-guest is in QEMU 9.1 and later)"),
        ("sev-snp", SNP, Q10.model_copy(update={"firmware": {}}), True, "no SEV-SNP capable OVMF (ovmf-amdsev or ovmf) found"),
        ("sev-snp", SNP.model_copy(update={"vm_types": ["default"], "sev_snp": False}), Q10, True, "KVM lacks VM type sev-snp: KVM_CAP_VM_TYPES=0x1 (default), backend kvm_amd; kvm_amd parameter sev_snp=N"),
        ("sev-snp", SNP, Q10.model_copy(update={"accelerators": ["tcg"]}), False, "qemu-10.0 (QEMU 10.0.2) has no kvm accelerator"),
        ("tdx", TDX, Q10, False, "qemu-10.0 (QEMU 10.0.2) has no QOM type tdx-guest (tdx-guest is in QEMU 10.1 and later)"),
        ("tdx", PVM, Q11, True, "KVM lacks VM type tdx: KVM_CAP_VM_TYPES=0x1 (default), backend kvm_pvm; kvm_intel not loaded"),
        ("memfd-private", PVM, Q10, False, "qemu-10.0 (QEMU 10.0.2) has no QOM type memory-backend-memfd-private"),
        ("memfd-private", PVM, QUPM, True, "KVM lacks VM type sw-protected: KVM_CAP_VM_TYPES=0x1 (default)"),
        ("memfd-private", TDX, QUPM.model_copy(update={"qom_types": [*Q10.qom_types, "memory-backend-memfd-private"]}), False, "has memory-backend-memfd-private but no sw-protected-vm"),
        ("guest-memfd-property", PVM, Q10, False, "qemu-10.0 (QEMU 10.0.2) memory-backend-memfd has no guest-memfd property"),
        ("guest-memfd-property", TDX, QGMEM, True, "KVM_CAP_GUEST_MEMFD_FLAGS=0x1 lacks init_shared"),
        ("guest-memfd-property", PVM.model_copy(update={"available": False, "unavailable_reason": "gone"}), QGMEM, True, "/dev/kvm unavailable (gone)"),
    ],
)  # fmt: skip
def test_why_a_flavour_cannot_run(
    flavour: str, kvm: KvmFacts, qemu: QemuFacts, binary_supports: bool, reason: str
) -> None:
    plan = plan_flavour(flavour, qemu, kvm)
    assert plan.name == flavour and not plan.usable
    assert reason in (plan.skip_reason or "")
    assert plan.binary_supports is binary_supports


@pytest.mark.parametrize(
    ("flavour", "kvm", "qemu", "expect"),
    [
        ("tdx", TDX, Q11, {"objects": ["tdx-guest,id=cgs0"], "cpu": "host", "bios": "/fw/OVMF.inteltdx.fd"}),
        ("memfd-private", TDX, QUPM, {"objects": ["sw-protected-vm,id=cgs0"], "backend_type": "memory-backend-memfd-private"}),
        ("guest-memfd-property", PVM, QGMEM, {"machine": None, "objects": [], "backend_props": {"guest-memfd": "on"}}),
    ],
)  # fmt: skip
def test_usable_plans(
    flavour: str, kvm: KvmFacts, qemu: QemuFacts, expect: dict[str, object]
) -> None:
    plan = plan_flavour(flavour, qemu, kvm)
    assert plan.usable and plan.binary_supports
    for key, value in expect.items():
        assert getattr(plan, key) == value, key


@pytest.mark.parametrize(
    ("kvm", "qemu", "chosen"),
    [(PVM, QGMEM, "guest-memfd-property"), (SNP, Q10, "sev-snp"), (TDX, Q11, "tdx"), (SNP, QGMEM, "guest-memfd-property")],
)  # fmt: skip
def test_auto_takes_the_first_usable(kvm: KvmFacts, qemu: QemuFacts, chosen: str) -> None:
    assert plan_flavour("auto", qemu, kvm).name == chosen


def test_auto_lists_why_each_was_rejected() -> None:
    plan = plan_flavour("auto", Q10, PVM)
    assert plan.name == "auto" and not plan.usable and not plan.binary_supports
    reason = plan.skip_reason or ""
    assert reason.startswith("no guest_memfd flavour works here: ")
    positions = [reason.index(f"{name}: ") for name in AUTO_ORDER]
    assert positions == sorted(positions)
    for name in AUTO_ORDER:
        assert (plan_flavour(name, Q10, PVM).skip_reason or "") in reason


def test_unknown_flavour() -> None:
    with pytest.raises(ScenarioError, match="unknown guest_memfd flavour 'snp'"):
        plan_flavour("snp", Q10, PVM)


def test_argv() -> None:
    assert plan_argv(plan_flavour("sev-snp", Q10, SNP), ram_size="128M") == [
        "-accel", "kvm",
        "-machine", "q35,confidential-guest-support=cgs0,memory-backend=ram0",
        "-m", "128M",
        "-object", "sev-snp-guest,id=cgs0,cbitpos=47,reduced-phys-bits=5",
        "-object", "memory-backend-memfd,id=ram0,size=128M",
        "-bios", "/fw/OVMF.amdsev.fd",
    ]  # fmt: skip
    assert plan_argv(plan_flavour("guest-memfd-property", QGMEM, PVM), machine="microvm") == [
        "-accel", "kvm",
        "-machine", "microvm,memory-backend=ram0",
        "-m", "64M",
        "-object", "memory-backend-memfd,id=ram0,size=64M,guest-memfd=on",
    ]  # fmt: skip


def test_argv_escapes_host_values_in_option_strings() -> None:
    """A value from the host with a comma stays one value (QEMU's doubled comma), and a
    property name that would split the option string is refused."""
    plan = dataclasses.replace(
        plan_flavour("guest-memfd-property", QGMEM, PVM),
        machine_opts={"confidential-guest-support": "cgs0,x=1"},
        backend_props={"guest-memfd": "on", "mem-path": "/srv/vm,ram"},
    )
    argv = plan_argv(plan, machine="microvm")
    assert "microvm,confidential-guest-support=cgs0,,x=1,memory-backend=ram0" in argv
    assert "memory-backend-memfd,id=ram0,size=64M,guest-memfd=on,mem-path=/srv/vm,,ram" in argv
    bad = dataclasses.replace(plan, backend_props={"share=on,x": "1"})
    with pytest.raises(ValueError, match="not a QEMU property name"):
        plan_argv(bad)


# ---- the real binaries -----------------------------------------------------------------------
_EXTRA = [p for p in os.environ.get("QMPGMEM_EXTRA_QEMU", "").split(os.pathsep) if p]
#: QEMU's own words for "this option does not parse" (qemu-option.c, qom/object_interfaces.c)
_PARSE_ERRORS = re.compile(
    r"Invalid parameter|does not accept value|Property '.*' not found|invalid object type"
)


@pytest.fixture(params=["default", *_EXTRA])
async def real(
    request: pytest.FixtureRequest, qemu_binary: str, kvm_available: None, no_leftovers: None
) -> tuple[QemuFacts, KvmFacts]:
    binary = qemu_binary if request.param == "default" else request.param
    return await probe_qemu(binary), probe_kvm()


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_real_binary_agrees_with_the_plan(
    flavour: str, real: tuple[QemuFacts, KvmFacts]
) -> None:
    qemu, kvm = real
    plan = plan_flavour(flavour, qemu, kvm)
    refusal = await refusal_of(plan, qemu.binary)
    if plan.usable:
        assert refusal is None, refusal
        return
    if plan.binary_supports:
        # every option parsed; KVM refused at accelerator setup, in QEMU's words
        assert refusal is not None and not _PARSE_ERRORS.search(refusal), refusal
        assert refusal.startswith("-accel kvm: "), refusal
        if flavour == "sev-snp" and "sev-snp" not in kvm.vm_types:
            assert "vm-type SEV-SNP not supported by KVM" in refusal
        if flavour == "tdx" and "tdx" not in kvm.vm_types:
            assert "vm-type TDX not supported by KVM" in refusal
    else:
        # the binary lacks what the reason says it lacks: QEMU trips over exactly that
        assert refusal is not None and _PARSE_ERRORS.search(refusal), refusal
        missing = {
            "sev-snp": "sev-snp-guest",
            "tdx": "tdx-guest",
            "memfd-private": "memory-backend-memfd-private",
            "guest-memfd-property": "guest-memfd",
        }[flavour]
        assert missing in refusal and missing in (plan.skip_reason or "")


async def test_a_bad_option_is_not_mistaken_for_a_refusal(
    real: tuple[QemuFacts, KvmFacts],
) -> None:
    qemu, kvm = real
    plan = plan_flavour("sev-snp", qemu, kvm)
    if not plan.binary_supports:
        pytest.skip(f"{qemu.binary} cannot express sev-snp: {plan.skip_reason}")
    broken = dataclasses.replace(plan, objects=[plan.objects[0] + ",no-such-property=1"])
    refusal = await refusal_of(broken, qemu.binary)
    assert refusal is not None and "no-such-property" in refusal
    assert "not supported by KVM" not in refusal


async def test_confirm_records_the_refusal(real: tuple[QemuFacts, KvmFacts]) -> None:
    qemu, kvm = real
    plan = plan_flavour("sev-snp", qemu, kvm)
    confirmed = await confirm_flavour(plan, qemu)
    if not plan.binary_supports or plan.usable:
        assert confirmed == plan
        return
    refusal = await refusal_of(plan, qemu.binary)
    assert confirmed.skip_reason == f"{plan.skip_reason}; QEMU refused it: {refusal}"


async def test_confirmed_auto(real: tuple[QemuFacts, KvmFacts]) -> None:
    qemu, kvm = real
    plan = await plan_flavour_confirmed("auto", qemu, kvm)
    if plan.usable:
        assert plan.name in AUTO_ORDER and await refusal_of(plan, qemu.binary) is None
    else:
        for name in AUTO_ORDER:
            assert f"{name}: " in (plan.skip_reason or "")
