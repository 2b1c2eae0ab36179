"""Ask the running kernel what its KVM offers for guest_memfd-backed VMs.

Why each question is asked the way it is (Documentation/virt/kvm/api.rst):

- KVM_CHECK_EXTENSION on /dev/kvm answers for the host; some capabilities depend on the VM
  type, so KVM_CAP_MEMORY_ATTRIBUTES (and the guest_memfd ones) are asked again on a VM fd of
  every type KVM_CAP_VM_TYPES lists: a default x86 VM has no PRIVATE attribute, a
  sw-protected/SNP/TDX VM does.
- The vendor module (/sys/module/kvm_intel, kvm_amd, kvm_pvm) decides things no capability
  tells: on kvm_pvm a guest ``vmcall`` never returns.
- SEV/SNP/TDX host enablement is in the vendor module's parameters.
- CPUID 0x8000001F gives the C-bit position a sev-snp-guest object must name.

Nothing here raises for a missing feature: a host without /dev/kvm is a fact too
(``available=False`` with the reason).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import struct
from pathlib import Path
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.objects import DEV_KVM, Kvm, KvmUnusable
from qmpgmem.host.cpu import cpu_kind
from qmpgmem.host.decode import (
    EXIT_HYPERCALL_NAMES,
    GMEM_FLAG_NAMES,
    MEMORY_ATTRIBUTE_NAMES,
    VM_TYPE_MASK_NAMES,
    VM_TYPE_NAMES,
    decode_bits,
)
from qmpgmem.host.facts import KvmFacts

__all__ = ["BACKEND_MODULES", "probe_kvm", "read_module_bool", "vendor_backend"]

log = logging.getLogger(__name__)

#: Vendor modules that can serve /dev/kvm on x86.
BACKEND_MODULES: Final = ("kvm_intel", "kvm_amd", "kvm_pvm")

#: Capabilities asked on /dev/kvm.
_HOST_CAPS: Final = (
    abi.Cap.USER_MEMORY2,
    abi.Cap.MEMORY_FAULT_INFO,
    abi.Cap.MEMORY_ATTRIBUTES,
    abi.Cap.GUEST_MEMFD,
    abi.Cap.VM_TYPES,
    abi.Cap.PRE_FAULT_MEMORY,
    abi.Cap.GUEST_MEMFD_FLAGS,
    abi.Cap.EXIT_HYPERCALL,
)
#: Capabilities whose answer depends on the VM, asked on each VM type's fd.
_VM_CAPS: Final = (abi.Cap.MEMORY_ATTRIBUTES, abi.Cap.GUEST_MEMFD, abi.Cap.GUEST_MEMFD_FLAGS)

_CPUID_DEV: Final = "/dev/cpu/0/cpuid"
_SEV_LEAF: Final = 0x8000001F


def _cap_name(cap: abi.Cap) -> str:
    return f"KVM_CAP_{cap.name}"


def read_module_bool(path: Path) -> bool | None:
    """A bool module parameter ("Y"/"N", "1"/"0"); None when the file does not exist."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text.upper() in ("Y", "1", "YES", "ON")


def vendor_backend(sys_module: Path = Path("/sys/module")) -> str | None:
    """The loaded vendor module(s) among :data:`BACKEND_MODULES`, "+"-joined; None if none."""
    loaded = [m for m in BACKEND_MODULES if (sys_module / m).is_dir()]
    return "+".join(loaded) if loaded else None


def _sev_cpuid(device: str = _CPUID_DEV) -> tuple[int | None, int | None]:
    """(cbitpos, reduced_phys_bits) from CPUID 0x8000001F EBX, or Nones when not available.

    The cpuid driver's file is read at offset = leaf (ECX = 0 in the high half).
    """
    try:
        fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None, None
    try:
        max_ext = struct.unpack("<4I", os.pread(fd, 16, 0x80000000))[0]
        if max_ext < _SEV_LEAF:
            return None, None
        _eax, ebx, _ecx, _edx = struct.unpack("<4I", os.pread(fd, 16, _SEV_LEAF))
    except OSError:
        return None, None
    finally:
        os.close(fd)
    cbitpos = ebx & 0x3F
    reduced = (ebx >> 6) & 0x3F
    return (cbitpos or None), (reduced or None)


def _probe_vm_types(kvm: Kvm, vm_types: list[str], facts: dict[str, object]) -> None:
    memory_attributes: dict[str, list[str]] = {}
    vm_caps: dict[str, dict[str, int]] = {}
    vm_errors: dict[str, str] = {}
    by_name = {name: number for number, name in VM_TYPE_NAMES.items()}
    for name in vm_types:
        number = by_name.get(name)
        if number is None:  # an unknown bit: nothing we know how to create
            continue
        try:
            vm = kvm.create_vm(int(number))
        except OSError as exc:
            # SEV/SNP VMs need the PSP initialised; creation may fail though the type is listed.
            vm_errors[name] = f"KVM_CREATE_VM({number}) failed: {exc.strerror or exc}"
            continue
        with vm:
            answers = {_cap_name(cap): vm.check_extension(int(cap)) for cap in _VM_CAPS}
        vm_caps[name] = answers
        memory_attributes[name] = decode_bits(
            answers[_cap_name(abi.Cap.MEMORY_ATTRIBUTES)], MEMORY_ATTRIBUTE_NAMES
        )
    facts["memory_attributes"] = memory_attributes
    facts["vm_caps"] = vm_caps
    facts["vm_errors"] = vm_errors


def _probe_uncached(
    device: str = DEV_KVM,
    sys_module: Path = Path("/sys/module"),
    cpuid_device: str = _CPUID_DEV,
) -> KvmFacts:
    """The probe itself; the paths are parameters so tests can point them at fakes."""
    facts: dict[str, object] = {
        "kernel_release": os.uname().release,
        "backend": vendor_backend(sys_module),
        "cpu": cpu_kind(),
        "sev": read_module_bool(sys_module / "kvm_amd/parameters/sev"),
        "sev_es": read_module_bool(sys_module / "kvm_amd/parameters/sev_es"),
        "sev_snp": read_module_bool(sys_module / "kvm_amd/parameters/sev_snp"),
        "tdx": read_module_bool(sys_module / "kvm_intel/parameters/tdx"),
    }
    facts["cbitpos"], facts["reduced_phys_bits"] = _sev_cpuid(cpuid_device)
    try:
        kvm = Kvm(device)
    except KvmUnusable as exc:
        reason = str(exc)
        log.info("KVM unavailable: %s", reason)
        return KvmFacts.model_validate({**facts, "available": False, "unavailable_reason": reason})
    with kvm:
        facts["api_version"] = kvm.api_version()
        caps: dict[str, int] = {}
        for cap in _HOST_CAPS:
            with contextlib.suppress(OSError):  # an old kernel may reject the number itself
                caps[_cap_name(cap)] = kvm.check_extension(int(cap))
        facts["caps"] = caps
        # KVM_CAP_VM_TYPES absent means only the default type exists (api.rst, KVM_CREATE_VM).
        vm_types_mask = caps.get(_cap_name(abi.Cap.VM_TYPES)) or (1 << abi.VmType.DEFAULT)
        vm_types = decode_bits(vm_types_mask, VM_TYPE_MASK_NAMES)
        facts["vm_types"] = vm_types
        facts["gmem_flags"] = decode_bits(
            caps.get(_cap_name(abi.Cap.GUEST_MEMFD_FLAGS), 0), GMEM_FLAG_NAMES
        )
        facts["exit_hypercall"] = decode_bits(
            caps.get(_cap_name(abi.Cap.EXIT_HYPERCALL), 0), EXIT_HYPERCALL_NAMES
        )
        _probe_vm_types(kvm, vm_types, facts)
    return KvmFacts.model_validate({**facts, "available": True})


@functools.cache
def probe_kvm() -> KvmFacts:
    """The KVM facts of this host; probed once per process (the kernel does not change)."""
    return _probe_uncached()
