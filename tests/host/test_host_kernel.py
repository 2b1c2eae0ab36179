"""The kernel probe against the running kernel, each answer cross-checked by doing the thing.

A capability value is a promise about an ioctl; these tests hold the probe to it: the
guest_memfd flags it reports are exactly the ones KVM_CREATE_GUEST_MEMFD accepts, a VM type
it leaves out is one KVM_CREATE_VM refuses, the PRIVATE attribute it reports (or not) is what
KVM_SET_MEMORY_ATTRIBUTES accepts (or not), and so on.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.objects import Kvm
from qmpgmem.host.decode import (
    EXIT_HYPERCALL_NAMES,
    GMEM_FLAG_NAMES,
    VM_TYPE_NAMES,
    encode_names,
)
from qmpgmem.host.facts import KvmFacts
from qmpgmem.host.kernel import (
    BACKEND_MODULES,
    _probe_uncached,
    _sev_cpuid,
    probe_kvm,
    read_module_bool,
    vendor_backend,
)

PAGE = 4096


@pytest.fixture
def kvm_facts(kvm_available: None) -> KvmFacts:
    return probe_kvm()


def test_identity_of_the_host(kvm_facts: KvmFacts) -> None:
    assert kvm_facts.available and kvm_facts.unavailable_reason is None
    assert kvm_facts.kernel_release == os.uname().release
    loaded = sorted(m for m in os.listdir("/sys/module") if m in BACKEND_MODULES)
    assert (kvm_facts.backend or "").split("+") == (loaded or [""])
    assert kvm_facts.api_version == abi.KVM_API_VERSION
    assert probe_kvm() is kvm_facts  # cached per process


def test_guest_memfd_flags_are_what_create_guest_memfd_accepts(kvm_facts: KvmFacts) -> None:
    if kvm_facts.cap("KVM_CAP_GUEST_MEMFD") == 0:
        with Kvm() as kvm, kvm.create_vm() as vm, pytest.raises(OSError):
            vm.create_guest_memfd(PAGE)
        return
    reported = encode_names(kvm_facts.gmem_flags, GMEM_FLAG_NAMES)
    assert reported == kvm_facts.cap("KVM_CAP_GUEST_MEMFD_FLAGS")
    unreported = next(1 << b for b in range(64) if not reported & (1 << b))
    with Kvm() as kvm, kvm.create_vm() as vm:
        vm.create_guest_memfd(PAGE, flags=reported).close()
        with pytest.raises(OSError) as exc:
            vm.create_guest_memfd(PAGE, flags=reported | unreported)
        assert exc.value.errno == errno.EINVAL


def test_vm_types_are_what_create_vm_accepts(kvm_facts: KvmFacts) -> None:
    assert "default" in kvm_facts.vm_types
    with Kvm() as kvm:
        for number, name in VM_TYPE_NAMES.items():
            if name in kvm_facts.vm_types:
                assert name in kvm_facts.memory_attributes or name in kvm_facts.vm_errors
                continue
            with pytest.raises(OSError) as exc:
                kvm.create_vm(int(number)).close()
            assert exc.value.errno == errno.EINVAL, name


def test_private_attribute_is_what_set_memory_attributes_accepts(kvm_facts: KvmFacts) -> None:
    with Kvm() as kvm, kvm.create_vm() as vm:
        if "private" in kvm_facts.memory_attributes["default"]:
            vm.set_memory_attributes(0, PAGE, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
        else:
            with pytest.raises(OSError):
                vm.set_memory_attributes(0, PAGE, abi.KVM_MEMORY_ATTRIBUTE_PRIVATE)
    raw = kvm_facts.vm_caps["default"]["KVM_CAP_MEMORY_ATTRIBUTES"]
    assert ("private" in kvm_facts.memory_attributes["default"]) == bool(
        raw & abi.KVM_MEMORY_ATTRIBUTE_PRIVATE
    )


def test_exit_hypercall_mask_is_what_enable_cap_accepts(kvm_facts: KvmFacts) -> None:
    mask = encode_names(kvm_facts.exit_hypercall, EXIT_HYPERCALL_NAMES)
    assert mask == kvm_facts.cap("KVM_CAP_EXIT_HYPERCALL")
    if mask == 0:
        pytest.skip("KVM_CAP_EXIT_HYPERCALL is 0 here")
    unreported = next(1 << b for b in range(64) if not mask & (1 << b))
    with Kvm() as kvm, kvm.create_vm() as vm:
        vm.enable_cap(abi.Cap.EXIT_HYPERCALL, mask)
    with Kvm() as kvm, kvm.create_vm() as vm, pytest.raises(OSError) as exc:
        vm.enable_cap(abi.Cap.EXIT_HYPERCALL, mask | unreported)
    assert exc.value.errno == errno.EINVAL


def test_facts_carry_their_source(kvm_facts: KvmFacts) -> None:
    by_name = {f.name: f for f in kvm_facts.facts()}
    for cap in ("USER_MEMORY2", "MEMORY_ATTRIBUTES", "GUEST_MEMFD", "VM_TYPES",
                "PRE_FAULT_MEMORY", "GUEST_MEMFD_FLAGS", "EXIT_HYPERCALL"):  # fmt: skip
        fact = by_name[f"KVM_CAP_{cap}"]
        number = int(abi.Cap[cap])
        assert fact.source == f"KVM_CHECK_EXTENSION(KVM_CAP_{cap}={number}) on /dev/kvm"
        assert fact.value == kvm_facts.caps[f"KVM_CAP_{cap}"]
    assert "default VM fd" in by_name["memory_attributes[default]"].source


def test_no_kvm_is_a_fact_not_an_error(tmp_path: Path) -> None:
    facts = _probe_uncached(device=str(tmp_path / "kvm"), sys_module=tmp_path)
    assert not facts.available
    assert str(tmp_path / "kvm") in (facts.unavailable_reason or "")
    assert facts.caps == {} and facts.vm_types == [] and facts.backend is None
    assert [f.name for f in facts.facts()] == ["kernel_release", "kvm", "backend", "cpu"]


def _module(root: Path, name: str, **params: str) -> None:
    (root / name / "parameters").mkdir(parents=True)
    for key, value in params.items():
        (root / name / "parameters" / key).write_text(value + "\n")


@pytest.mark.parametrize(
    ("modules", "backend"),
    [
        ([], None),
        (["kvm_pvm"], "kvm_pvm"),
        (["kvm_amd"], "kvm_amd"),
        (["kvm_intel"], "kvm_intel"),
        (["kvm_pvm", "kvm_intel"], "kvm_intel+kvm_pvm"),
        (["kvm", "irqbypass"], None),
    ],
)
def test_vendor_backend(tmp_path: Path, modules: list[str], backend: str | None) -> None:
    for m in modules:
        _module(tmp_path, m)
    assert vendor_backend(tmp_path) == backend


@pytest.mark.parametrize(
    ("text", "value"), [("Y", True), ("N", False), ("1", True), ("0", False), (None, None)]
)
def test_read_module_bool(tmp_path: Path, text: str | None, value: bool | None) -> None:
    path = tmp_path / "param"
    if text is not None:
        path.write_text(text + "\n")
    assert read_module_bool(path) is value


def test_host_enablement_from_module_parameters(tmp_path: Path) -> None:
    _module(tmp_path, "kvm_amd", sev="Y", sev_es="N", sev_snp="Y")
    facts = _probe_uncached(device=str(tmp_path / "kvm"), sys_module=tmp_path)
    assert (facts.sev, facts.sev_es, facts.sev_snp, facts.tdx) == (True, False, True, None)
    assert facts.backend == "kvm_amd"


def _cpuid_file(path: Path, max_ext: int, ebx: int) -> None:
    """A sparse file laid out like /dev/cpu/N/cpuid: 16 bytes (eax..edx) at offset = leaf."""
    with open(path, "wb") as f:
        f.seek(0x80000000)
        f.write(max_ext.to_bytes(4, "little") + bytes(12))
        f.seek(0x8000001F)
        f.write(bytes(4) + ebx.to_bytes(4, "little") + bytes(8))


@pytest.mark.parametrize(
    ("max_ext", "ebx", "expected"),
    [
        (0x80000021, 51 | 1 << 6, (51, 1)),  # EPYC Milan/Genoa with SME/SEV
        (0x80000021, 47 | 5 << 6, (47, 5)),
        (0x80000021, 0, (None, None)),  # this host (PVM): the leaf is all zeros
        (0x80000008, 51 | 1 << 6, (None, None)),  # leaf beyond the maximum: not there
    ],
)
def test_sev_cpuid(
    tmp_path: Path, max_ext: int, ebx: int, expected: tuple[int | None, int | None]
) -> None:
    path = tmp_path / "cpuid"
    _cpuid_file(path, max_ext, ebx)
    assert _sev_cpuid(str(path)) == expected
    assert _sev_cpuid(str(tmp_path / "absent")) == (None, None)
