# ruff: noqa: E501  (the tables read best one row per line)
"""Requirement evaluation, table-driven over hosts and binaries written out as facts.

The facts below are the shapes real hosts have (this PVM host, an SNP host, a TDX host, a
host without /dev/kvm) and real binaries (Debian's QEMU 10.0 and 11.1); each row states
what a scenario requirement must evaluate to on them.
"""

from __future__ import annotations

import re

import pytest

from qmpgmem.errors import ScenarioError
from qmpgmem.host import (
    KNOWN_REQUIREMENTS,
    HostFacts,
    KvmFacts,
    QemuFacts,
    check_requirement_syntax,
    evaluate_requirement,
    evaluate_requirements,
)

_CAPS = {
    "KVM_CAP_USER_MEMORY2": 1,
    "KVM_CAP_MEMORY_ATTRIBUTES": 0,
    "KVM_CAP_GUEST_MEMFD": 1,
    "KVM_CAP_VM_TYPES": 0x1,
    "KVM_CAP_PRE_FAULT_MEMORY": 0,
    "KVM_CAP_GUEST_MEMFD_FLAGS": 0x3,
    "KVM_CAP_EXIT_HYPERCALL": 0x1000,
}
_DEFAULT_VM = {
    "KVM_CAP_MEMORY_ATTRIBUTES": 0,
    "KVM_CAP_GUEST_MEMFD": 1,
    "KVM_CAP_GUEST_MEMFD_FLAGS": 3,
}
_PRIVATE_VM = {**_DEFAULT_VM, "KVM_CAP_MEMORY_ATTRIBUTES": 8, "KVM_CAP_GUEST_MEMFD_FLAGS": 0}

PVM = KvmFacts(
    available=True,
    kernel_release="6.18.44-fc-v669",
    api_version=12,
    backend="kvm_pvm",
    caps=_CAPS,
    vm_types=["default"],
    gmem_flags=["mmap", "init_shared"],
    exit_hypercall=["map_gpa_range"],
    memory_attributes={"default": []},
    vm_caps={"default": _DEFAULT_VM},
)
SNP = PVM.model_copy(
    update={
        "kernel_release": "6.16.0",
        "backend": "kvm_amd",
        "caps": {**_CAPS, "KVM_CAP_VM_TYPES": 0x1D, "KVM_CAP_PRE_FAULT_MEMORY": 1},
        "vm_types": ["default", "sev", "sev-es", "sev-snp"],
        "memory_attributes": {"default": [], "sev": [], "sev-es": [], "sev-snp": ["private"]},
        "vm_caps": {"default": _DEFAULT_VM, "sev-snp": _PRIVATE_VM},
        "sev": True,
        "sev_es": True,
        "sev_snp": True,
        "cbitpos": 51,
        "reduced_phys_bits": 1,
    }
)
TDX = PVM.model_copy(
    update={
        "backend": "kvm_intel",
        "caps": {**_CAPS, "KVM_CAP_VM_TYPES": 0x23, "KVM_CAP_GUEST_MEMFD_FLAGS": 0x1},
        "vm_types": ["default", "sw-protected", "tdx"],
        "gmem_flags": ["mmap"],
        "memory_attributes": {"default": [], "sw-protected": ["private"]},
        "vm_caps": {"default": _DEFAULT_VM, "sw-protected": _PRIVATE_VM},
        "vm_errors": {"tdx": "KVM_CREATE_VM(5) failed: Invalid argument"},
        "tdx": True,
    }
)
NO_KVM = KvmFacts(
    available=False,
    unavailable_reason="cannot open /dev/kvm: No such file or directory",
    kernel_release="6.1.0",
)
OLD = PVM.model_copy(
    update={
        "backend": "kvm_intel",
        "caps": {"KVM_CAP_USER_MEMORY2": 0, "KVM_CAP_GUEST_MEMFD": 0},
        "gmem_flags": [],
        "exit_hypercall": [],
    }
)

_MACHINE = ["confidential-guest-support", "memory-backend", "smm"]
Q10 = QemuFacts(
    binary="/usr/bin/qemu-system-x86_64",
    version=(10, 0, 2),
    version_str="10.0.2",
    accelerators=["kvm", "tcg"],
    qom_types=["memory-backend-memfd", "memory-backend-ram", "sev-guest", "sev-snp-guest"],
    backend_props={"memory-backend-memfd": ["seal", "share", "size"]},
    machine_types={"q35": "pc-q35-10.0", "microvm": "microvm"},
    machine_props={"q35": _MACHINE, "microvm": _MACHINE},
    qmp_commands=["query-memdev", "query-status", "system_reset"],
    firmware={"ovmf": "/usr/share/ovmf/OVMF.fd"},
)
Q11 = Q10.model_copy(
    update={
        "binary": "/opt/qemu-sid/qemu-system-x86_64",
        "version": (11, 1, 3),
        "version_str": "11.1.3",
        "qom_types": [*Q10.qom_types, "tdx-guest"],
        "machine_props": {
            "q35": [*_MACHINE, "x-change-vmfd-on-reset"],
            "microvm": [*_MACHINE, "x-change-vmfd-on-reset"],
        },
        "qmp_commands": [*Q10.qmp_commands, "query-accelerators"],
        "firmware": {"ovmf": "/x/OVMF.fd", "ovmf-amdsev": "/x/OVMF.amdsev.fd"},
    }
)
Q11_PARTIAL = Q11.model_copy(
    update={"machine_props": {"q35": [*_MACHINE, "x-change-vmfd-on-reset"], "microvm": _MACHINE}}
)
QGMEM = Q10.model_copy(
    update={"backend_props": {"memory-backend-memfd": ["guest-memfd", "seal", "share", "size"]}}
)

# (requirement, kvm, qemu, expected): None = met; a string = the exact skip reason.
TABLE: list[tuple[str, KvmFacts, QemuFacts | None, str | None]] = [
    ("kvm", PVM, None, None),
    ("kvm", NO_KVM, None, "needs kvm; /dev/kvm unavailable (cannot open /dev/kvm: No such file or directory)"),
    ("guest_memfd", PVM, None, None),
    ("guest_memfd", OLD, None, "needs guest_memfd; KVM_CAP_GUEST_MEMFD=0 on /dev/kvm"),
    ("guest_memfd", NO_KVM, None, "needs guest_memfd; /dev/kvm unavailable (cannot open /dev/kvm: No such file or directory)"),
    ("user_memory2", OLD, None, "needs user_memory2; KVM_CAP_USER_MEMORY2=0 on /dev/kvm"),
    ("guest_memfd_mmap", PVM, None, None),
    ("guest_memfd_mmap", TDX, None, None),
    ("guest_memfd_mmap", OLD, None, "needs guest_memfd_mmap; KVM_CAP_GUEST_MEMFD_FLAGS=0x0 (none) on /dev/kvm"),
    ("guest_memfd_init_shared", PVM, None, None),
    ("guest_memfd_init_shared", TDX, None, "needs guest_memfd_init_shared; KVM_CAP_GUEST_MEMFD_FLAGS=0x1 (mmap) on /dev/kvm"),
    ("memory_attributes_private", PVM, None, "needs memory_attributes_private; KVM_CAP_MEMORY_ATTRIBUTES=0 on default VM"),
    ("memory_attributes_private", SNP, None, None),
    ("memory_attributes_private", TDX, None, None),
    ("memory_attributes_private:default", SNP, None, "needs memory_attributes_private:default; KVM_CAP_MEMORY_ATTRIBUTES=0 on default VM"),
    ("memory_attributes_private:sev-snp", SNP, None, None),
    ("memory_attributes_private:sev-snp", PVM, None, "needs memory_attributes_private:sev-snp; VM type sev-snp not offered (KVM_CAP_VM_TYPES lacks it)"),
    ("memory_attributes_private:tdx", TDX, None, "needs memory_attributes_private:tdx; no tdx VM: KVM_CREATE_VM(5) failed: Invalid argument"),
    ("pre_fault_memory", PVM, None, "needs pre_fault_memory; KVM_CAP_PRE_FAULT_MEMORY=0 on /dev/kvm"),
    ("pre_fault_memory", SNP, None, None),
    ("exit_hypercall_map_gpa_range", PVM, None, None),
    ("exit_hypercall_map_gpa_range", OLD, None, "needs exit_hypercall_map_gpa_range; KVM_CAP_EXIT_HYPERCALL=0x0 (none) on /dev/kvm"),
    ("vm_type:default", PVM, None, None),
    ("vm_type:sev-snp", PVM, None, "needs vm_type:sev-snp; KVM_CAP_VM_TYPES=0x1 (default) on /dev/kvm"),
    ("vm_type:sev-snp", SNP, None, None),
    ("vm_type:tdx", SNP, None, "needs vm_type:tdx; KVM_CAP_VM_TYPES=0x1d (default, sev, sev-es, sev-snp) on /dev/kvm"),
    ("vm_type:tdx", TDX, None, None),
    ("backend:kvm_pvm", PVM, None, None),
    ("backend:kvm_intel", PVM, None, "needs backend:kvm_intel; KVM backend is kvm_pvm"),
    ("backend:kvm_amd", NO_KVM, None, "needs backend:kvm_amd; KVM backend is none (no vendor module loaded)"),
    ("hypercall_returns", PVM, None, "needs hypercall_returns; KVM backend is kvm_pvm: a guest vmcall/vmmcall does not return there"),
    ("hypercall_returns", SNP, None, None),
    ("hypercall_returns", TDX, None, None),
    ("hypercall_returns", NO_KVM, None, "needs hypercall_returns; no KVM vendor module loaded"),
    ("host_enabled:sev_snp", SNP, None, None),
    ("host_enabled:sev_snp", PVM, None, "needs host_enabled:sev_snp; kvm_amd not loaded (/sys/module/kvm_amd/parameters/sev_snp absent)"),
    ("host_enabled:tdx", SNP.model_copy(update={"tdx": False}), None, "needs host_enabled:tdx; /sys/module/kvm_intel/parameters/tdx=N"),
    ("kernel>=6.18", PVM, None, None),
    ("kernel>=6.18", SNP, None, "needs kernel>=6.18; kernel release is 6.16.0"),
    ("kernel<7", PVM, None, None),
    ("qemu", PVM, Q10, None),
    ("qemu", PVM, None, "needs qemu; no QEMU binary probed"),
    ("qemu>=11.0", PVM, Q10, "needs qemu>=11.0; /usr/bin/qemu-system-x86_64 is QEMU 10.0.2"),
    ("qemu>=11.0", PVM, Q11, None),
    ("qemu>=11.0", PVM, None, "needs qemu>=11.0; no QEMU binary probed"),
    ("qemu==10.0", PVM, Q10, None),
    ("qemu<10.0.3", PVM, Q10, None),
    ("qemu>10", PVM, Q10, "needs qemu>10; /usr/bin/qemu-system-x86_64 is QEMU 10.0.2"),
    ("qemu!=11", PVM, Q11, "needs qemu!=11; /opt/qemu-sid/qemu-system-x86_64 is QEMU 11.1.3"),
    ("qemu_type:sev-snp-guest", PVM, Q10, None),
    ("qemu_type:tdx-guest", PVM, Q10, "needs qemu_type:tdx-guest; /usr/bin/qemu-system-x86_64 (QEMU 10.0.2) has no QOM type tdx-guest (qom-list-types)"),
    ("qemu_type:tdx-guest", PVM, Q11, None),
    ("qemu_type:tdx-guest", PVM, None, "needs qemu_type:tdx-guest; no QEMU binary probed"),
    ("qemu_machine_prop:x-change-vmfd-on-reset", PVM, Q10, "needs qemu_machine_prop:x-change-vmfd-on-reset; /usr/bin/qemu-system-x86_64 (QEMU 10.0.2) machine q35/microvm has no property x-change-vmfd-on-reset (qom-list-properties)"),
    ("qemu_machine_prop:x-change-vmfd-on-reset", PVM, Q11, None),
    ("qemu_machine_prop:x-change-vmfd-on-reset", PVM, Q11_PARTIAL, "needs qemu_machine_prop:x-change-vmfd-on-reset; /opt/qemu-sid/qemu-system-x86_64 (QEMU 11.1.3) machine q35/microvm has no property x-change-vmfd-on-reset (qom-list-properties)"),
    ("qemu_machine_prop:q35:x-change-vmfd-on-reset", PVM, Q11_PARTIAL, None),
    ("qemu_machine_prop:microvm:x-change-vmfd-on-reset", PVM, Q11_PARTIAL, "needs qemu_machine_prop:microvm:x-change-vmfd-on-reset; /opt/qemu-sid/qemu-system-x86_64 (QEMU 11.1.3) machine microvm has no property x-change-vmfd-on-reset (qom-list-properties)"),
    ("qemu_backend_prop:memory-backend-memfd:guest-memfd", PVM, Q10, "needs qemu_backend_prop:memory-backend-memfd:guest-memfd; /usr/bin/qemu-system-x86_64 (QEMU 10.0.2) memory-backend-memfd has no property guest-memfd (qom-list-properties)"),
    ("qemu_backend_prop:memory-backend-memfd:guest-memfd", PVM, QGMEM, None),
    ("qemu_backend_prop:memory-backend-memfd-private:share", PVM, Q10, "needs qemu_backend_prop:memory-backend-memfd-private:share; /usr/bin/qemu-system-x86_64 (QEMU 10.0.2) has no QOM type memory-backend-memfd-private"),
    ("qemu_accel:kvm", PVM, Q10, None),
    ("qemu_accel:hvf", PVM, Q10, "needs qemu_accel:hvf; /usr/bin/qemu-system-x86_64 accelerators are kvm, tcg"),
    ("qemu_qmp:query-memdev", PVM, Q10, None),
    ("qemu_qmp:query-accelerators", PVM, Q10, "needs qemu_qmp:query-accelerators; /usr/bin/qemu-system-x86_64 (QEMU 10.0.2) has no QMP command query-accelerators (query-qmp-schema)"),
    ("qemu_qmp:query-accelerators", PVM, Q11, None),
    ("firmware:ovmf", PVM, Q10, None),
    ("firmware:ovmf-amdsev", PVM, Q10, "needs firmware:ovmf-amdsev; no ovmf-amdsev image found (have: ovmf)"),
    ("firmware:ovmf-amdsev", PVM, Q11, None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("requirement", "kvm", "qemu", "expected"),
    TABLE,
    ids=[f"{r[0]}-{i}" for i, r in enumerate(TABLE)],
)
def test_requirement(
    requirement: str, kvm: KvmFacts, qemu: QemuFacts | None, expected: str | None
) -> None:
    assert check_requirement_syntax(requirement) is None
    facts = HostFacts(kvm=kvm, qemu=[qemu] if qemu else [])
    assert evaluate_requirement(requirement, facts, qemu) == expected


def test_all_requirements_reported_together() -> None:
    facts = HostFacts(kvm=PVM, qemu=[Q10])
    requires = ["kvm", "guest_memfd", "vm_type:sev-snp", "qemu>=11.0", "qemu_type:sev-snp-guest"]
    assert evaluate_requirements(requires, facts, Q10) == (
        "needs vm_type:sev-snp; KVM_CAP_VM_TYPES=0x1 (default) on /dev/kvm"
        " | needs qemu>=11.0; /usr/bin/qemu-system-x86_64 is QEMU 10.0.2"
    )
    assert evaluate_requirements(["kvm", "guest_memfd_mmap"], facts, Q10) is None
    assert evaluate_requirements([], facts, None) is None


def test_bare_private_attribute_asks_about_the_scenarios_vm_type() -> None:
    facts = HostFacts(kvm=SNP)
    assert evaluate_requirement("memory_attributes_private", facts) is None
    assert evaluate_requirement("memory_attributes_private", facts, vm_type="sev-snp") is None
    assert evaluate_requirements(["memory_attributes_private"], facts, vm_type="default") == (
        "needs memory_attributes_private; KVM_CAP_MEMORY_ATTRIBUTES=0 on default VM"
    )


SYNTAX_ERRORS = [
    ("guest_memfds", "unknown requirement 'guest_memfds'"),
    ("vm_type", "needs an argument"),
    ("vm_type:snp", "unknown VM type 'snp'; known: default, sw-protected, sev, sev-es, sev-snp, tdx"),
    ("kvm:yes", "takes no argument"),
    ("hypercall_returns:kvm_pvm", "takes no argument"),
    ("backend:kvm", "unknown KVM backend 'kvm'; known: kvm_intel, kvm_amd, kvm_pvm"),
    ("host_enabled:sme", "unknown host feature 'sme'"),
    ("firmware:seabios", "unknown firmware 'seabios'"),
    ("memory_attributes_private:protected", "unknown VM type 'protected'"),
    ("qemu>=eleven", "malformed version requirement"),
    ("qemu=>11", "malformed version requirement"),
    ("kernel>=", "malformed version requirement"),
    ("qemu_backend_prop:guest-memfd", "expected backend-type:property"),
    ("qemu_type:sev snp", "not a valid QOM type"),
    ("qemu_machine_prop:q35:", "'' is not a valid QOM name"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "message"), SYNTAX_ERRORS)
def test_syntax_errors(text: str, message: str) -> None:
    error = check_requirement_syntax(text)
    assert error is not None and message in error
    with pytest.raises(ScenarioError, match=re.escape(message)):
        evaluate_requirement(text, HostFacts(kvm=PVM), None)


def _example(spelling: str) -> str:
    """A concrete requirement for each KNOWN_REQUIREMENTS spelling."""
    fill = {
        "<type>": "tdx",
        "[:<vm-type>]": ":sev-snp",
        "<module>": "kvm_amd",
        "<feature>": "sev_snp",
        "<qom-type>": "sev-snp-guest",
        "[<machine>:]<property>": "q35:x-change-vmfd-on-reset",
        "<backend-type>:<property>": "memory-backend-memfd:guest-memfd",
        "<accel>": "kvm",
        "<command>": "query-memdev",
        "<name>": "ovmf-amdsev",
        "<op><version>": ">=6.1",
    }
    for placeholder, value in fill.items():
        spelling = spelling.replace(placeholder, value)
    return spelling


@pytest.mark.parametrize("spelling", list(KNOWN_REQUIREMENTS))
def test_every_documented_spelling_is_accepted(spelling: str) -> None:
    example = _example(spelling)
    assert "<" not in example.replace(">=", "")
    assert check_requirement_syntax(example) is None, example
    for kvm in (PVM, SNP, TDX, NO_KVM, OLD):
        for qemu in (Q10, Q11, None):
            result = evaluate_requirement(example, HostFacts(kvm=kvm), qemu)
            assert result is None or result.startswith(f"needs {example}; ")
