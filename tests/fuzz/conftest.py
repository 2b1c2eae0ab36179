"""Hosts for the fuzzer's pure tests: this machine's kind (kvm_pvm), a hardware KVM host with
sw-protected VMs, and one without /dev/kvm. The facts are typed the way the probe records them."""

from __future__ import annotations

import pytest

from qmpgmem.host.facts import HostFacts, KvmFacts
from qmpgmem.runner import HostContext


def _kvm_facts(backend: str) -> KvmFacts:
    return KvmFacts(
        available=True,
        kernel_release="6.18.0",
        backend=backend,
        caps={
            "KVM_CAP_USER_MEMORY2": 1,
            "KVM_CAP_GUEST_MEMFD": 1,
            "KVM_CAP_VM_TYPES": 0x3 if backend != "kvm_pvm" else 0x1,
            "KVM_CAP_GUEST_MEMFD_FLAGS": 3,
            "KVM_CAP_EXIT_HYPERCALL": 0x1000,
        },
        vm_types=["default", "sw-protected"] if backend != "kvm_pvm" else ["default"],
        gmem_flags=["mmap", "init_shared"],
        exit_hypercall=["map_gpa_range"],
        memory_attributes=(
            {"default": [], "sw-protected": ["private"]}
            if backend != "kvm_pvm"
            else {"default": []}
        ),
    )


def make_host(backend: str, facts: bool = True) -> HostContext:
    if backend == "":
        return HostContext(kvm_backend="", kvm_usable=False, qemu_versions={})
    return HostContext(
        kvm_backend=backend,
        kvm_usable=True,
        kernel_release="6.18.0",
        facts=HostFacts(kvm=_kvm_facts(backend)) if facts else None,
    )


@pytest.fixture
def pvm_host() -> HostContext:
    """A host like this one: KVM by kvm_pvm (hypercalls never return), guest_memfd with mmap."""
    return make_host("kvm_pvm")


@pytest.fixture
def hw_host() -> HostContext:
    """A hardware KVM host (kvm_intel) that offers sw-protected VMs with private memory."""
    return make_host("kvm_intel")


@pytest.fixture
def tcg_host() -> HostContext:
    """A host without /dev/kvm."""
    return make_host("")


@pytest.fixture
def unprobed_host() -> HostContext:
    """A kvm_pvm host whose capabilities were not probed (``facts`` None)."""
    return make_host("kvm_pvm", facts=False)
