"""What the host and each QEMU binary were seen to support, with where each answer came from.

Why models and not dicts: the same facts feed the ``probe`` command (a table and a JSON
document), the requirement check that turns a scenario into a skip, and the QEMU engine's
choice of guest_memfd flavour. Each value keeps its provenance (:class:`Fact`), because a
skip reason is only useful when it says which ioctl or file gave the answer.

The models hold observations only; they never probe. :mod:`.kernel` and :mod:`.qemu` fill
them, :mod:`.requirements` and the flavour planner read them.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from qmpgmem.engines.kvm import abi
from qmpgmem.host.firmware import FIRMWARE_NAMES, FIRMWARE_PATHS
from qmpgmem.host.qmp_policy import QmpPolicy

__all__ = [
    "BACKEND_TYPES",
    "CONFIDENTIAL_TYPES",
    "MACHINES",
    "Fact",
    "HostFacts",
    "KvmFacts",
    "QemuFacts",
]

#: QOM types of confidential-guest objects whose properties the QEMU probe records.
CONFIDENTIAL_TYPES: Final = ("sev-guest", "sev-snp-guest", "tdx-guest", "sw-protected-vm")
#: Memory backend types whose properties the QEMU probe records.
BACKEND_TYPES: Final = (
    "memory-backend-ram",
    "memory-backend-memfd",
    "memory-backend-file",
    "memory-backend-memfd-private",
)
#: Machine names (as given to ``-machine``) whose properties the QEMU probe records.
MACHINES: Final = ("q35", "microvm")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fact(_Model):
    """One observed capability: its name, its value, and the call or file that gave it."""

    name: str
    value: Any
    source: str


def _cap_source(cap: str, where: str) -> str:
    number = int(abi.Cap[cap.removeprefix("KVM_CAP_")])
    return f"KVM_CHECK_EXTENSION({cap}={number}) on {where}"


class KvmFacts(_Model):
    """The kernel side: /dev/kvm, its capabilities, per-VM-type answers, vendor enablement."""

    available: bool
    unavailable_reason: str | None = None
    kernel_release: str
    api_version: int | None = None
    #: the vendor module serving /dev/kvm: kvm_intel, kvm_amd or kvm_pvm ("+"-joined if several)
    backend: str | None = None
    #: the CPU the backend runs on: "bare metal", "virtual (KVM)", "emulated (QEMU TCG)"
    cpu: str = ""
    #: KVM_CHECK_EXTENSION on /dev/kvm, keyed by the header's name (KVM_CAP_GUEST_MEMFD, ...)
    caps: dict[str, int] = Field(default_factory=dict)
    #: KVM_CAP_VM_TYPES decoded: default, sw-protected, sev, sev-es, sev-snp, tdx
    vm_types: list[str] = Field(default_factory=list)
    #: KVM_CAP_GUEST_MEMFD_FLAGS decoded: mmap, init_shared
    gmem_flags: list[str] = Field(default_factory=list)
    #: KVM_CAP_EXIT_HYPERCALL decoded: map_gpa_range
    exit_hypercall: list[str] = Field(default_factory=list)
    #: per VM type: KVM_CAP_MEMORY_ATTRIBUTES asked on a VM of that type, decoded (private)
    memory_attributes: dict[str, list[str]] = Field(default_factory=dict)
    #: per VM type: raw KVM_CHECK_EXTENSION answers on that VM's fd
    vm_caps: dict[str, dict[str, int]] = Field(default_factory=dict)
    #: per VM type listed in vm_types whose KVM_CREATE_VM failed: the error
    vm_errors: dict[str, str] = Field(default_factory=dict)
    #: vendor module parameters; None when the module is not loaded
    sev: bool | None = None
    sev_es: bool | None = None
    sev_snp: bool | None = None
    tdx: bool | None = None
    #: CPUID 0x8000001F EBX[5:0] and EBX[11:6] of the host (None when not readable or 0)
    cbitpos: int | None = None
    reduced_phys_bits: int | None = None

    def cap(self, name: str) -> int:
        """A /dev/kvm capability value by header name; 0 when KVM was not asked or absent."""
        return self.caps.get(name, 0)

    def vm_types_text(self) -> str:
        """KVM_CAP_VM_TYPES as a skip reason shows it: raw value and decoded names."""
        raw = self.cap("KVM_CAP_VM_TYPES")
        if raw == 0:
            return "KVM_CAP_VM_TYPES=0 (only the default VM type)"
        return f"KVM_CAP_VM_TYPES={raw:#x} ({', '.join(self.vm_types) or 'none'})"

    def facts(self) -> list[Fact]:
        out = [
            Fact(name="kernel_release", value=self.kernel_release, source="uname(2) release"),
            Fact(
                name="kvm",
                value=self.available if self.available else self.unavailable_reason,
                source="open(/dev/kvm, O_RDWR)",
            ),
            Fact(
                name="backend",
                value=self.backend,
                source="/sys/module/{kvm_intel,kvm_amd,kvm_pvm}",
            ),
            Fact(name="cpu", value=self.cpu, source="CPUID 1 ECX[31] and 0x40000000; cmdline"),
        ]
        if not self.available:
            return out
        out.append(Fact(name="api_version", value=self.api_version, source="KVM_GET_API_VERSION"))
        for cap, raw in self.caps.items():
            out.append(Fact(name=cap, value=raw, source=_cap_source(cap, "/dev/kvm")))
        decoded = (
            ("vm_types", self.vm_types, "KVM_CAP_VM_TYPES"),
            ("guest_memfd_flags", self.gmem_flags, "KVM_CAP_GUEST_MEMFD_FLAGS"),
            ("exit_hypercall", self.exit_hypercall, "KVM_CAP_EXIT_HYPERCALL"),
        )
        for name, value, cap in decoded:
            source = "decoded from " + _cap_source(cap, "/dev/kvm")
            out.append(Fact(name=name, value=value, source=source))
        for vm_type, attrs in self.memory_attributes.items():
            out.append(
                Fact(
                    name=f"memory_attributes[{vm_type}]",
                    value=attrs,
                    source="decoded from "
                    + _cap_source("KVM_CAP_MEMORY_ATTRIBUTES", f"a {vm_type} VM fd"),
                )
            )
        for vm_type, error in self.vm_errors.items():
            out.append(Fact(name=f"create_vm[{vm_type}]", value=error, source="KVM_CREATE_VM"))
        for name, module in (
            ("sev", "kvm_amd"),
            ("sev_es", "kvm_amd"),
            ("sev_snp", "kvm_amd"),
            ("tdx", "kvm_intel"),
        ):
            out.append(
                Fact(
                    name=f"host_{name}",
                    value=getattr(self, name),
                    source=f"/sys/module/{module}/parameters/{name}",
                )
            )
        cpuid = "CPUID 0x8000001F EBX via /dev/cpu/0/cpuid"
        out.append(Fact(name="cbitpos", value=self.cbitpos, source=f"{cpuid} [5:0]"))
        out.append(
            Fact(name="reduced_phys_bits", value=self.reduced_phys_bits, source=f"{cpuid} [11:6]")
        )
        return out


class QemuFacts(_Model):
    """One QEMU binary as its own QMP monitor describes it (``-machine none``, paused)."""

    binary: str
    version: tuple[int, int, int]
    version_str: str
    package: str = ""
    #: accelerators compiled in (QOM types implementing "accel", "-accel" suffix dropped)
    accelerators: list[str] = Field(default_factory=list)
    #: query-kvm "present": the binary found a usable /dev/kvm
    kvm_present: bool | None = None
    #: every non-abstract QOM type (qom-list-types), sorted
    qom_types: list[str] = Field(default_factory=list)
    #: qom-list-properties of each memory backend type in BACKEND_TYPES the binary has
    backend_props: dict[str, list[str]] = Field(default_factory=dict)
    #: qom-list-properties of each confidential-guest type in CONFIDENTIAL_TYPES it has
    object_props: dict[str, list[str]] = Field(default_factory=dict)
    #: machine name as given to -machine -> the concrete machine it resolves to (query-machines)
    machine_types: dict[str, str] = Field(default_factory=dict)
    #: qom-list-properties of each machine in MACHINES, keyed by the -machine name
    machine_props: dict[str, list[str]] = Field(default_factory=dict)
    #: query-qmp-schema: command and event names
    qmp_commands: list[str] = Field(default_factory=list)
    qmp_events: list[str] = Field(default_factory=list)
    #: firmware name (FIRMWARE_NAMES) -> path of an image that exists
    firmware: dict[str, str] = Field(default_factory=dict)
    #: the whole query-qmp-schema, kept out of reports (set by the probe)
    _qmp_schema: list[dict[str, Any]] = PrivateAttr(default_factory=list)
    _qmp_policy: QmpPolicy | None = PrivateAttr(default=None)

    def set_qmp_schema(self, schema: list[dict[str, Any]]) -> None:
        """Keep the binary's query-qmp-schema for :meth:`qmp_policy` (private: not reported)."""
        self._qmp_schema = schema
        self._qmp_policy = None

    def qmp_policy(self) -> QmpPolicy | None:
        """Which QMP commands of this binary reach the host (docs/security.md), or None
        when the probe did not keep the schema."""
        if self._qmp_policy is None and self._qmp_schema:
            self._qmp_policy = QmpPolicy(self._qmp_schema)
        return self._qmp_policy

    def has_type(self, qom_type: str) -> bool:
        return qom_type in self.qom_types

    def has_backend_prop(self, backend: str, prop: str) -> bool:
        return prop in self.backend_props.get(backend, [])

    def has_machine_prop(self, prop: str, machine: str | None = None) -> bool:
        """True if ``machine`` (or, with None, every probed machine) has the property."""
        if machine is not None:
            return prop in self.machine_props.get(machine, [])
        return bool(self.machine_props) and all(
            prop in props for props in self.machine_props.values()
        )

    def facts(self) -> list[Fact]:
        qmp = f"QMP of {self.binary}"
        out = [
            Fact(name="qemu.version", value=self.version_str, source=f"query-version, {qmp}"),
            Fact(
                name="qemu.accelerators",
                value=self.accelerators,
                source=f"qom-list-types implements=accel, {qmp}",
            ),
            Fact(name="qemu.kvm_present", value=self.kvm_present, source=f"query-kvm, {qmp}"),
        ]
        for qom_type in CONFIDENTIAL_TYPES + BACKEND_TYPES:
            out.append(
                Fact(
                    name=f"qemu.type[{qom_type}]",
                    value=self.has_type(qom_type),
                    source=f"qom-list-types, {qmp}",
                )
            )
        if "memory-backend-memfd" in self.backend_props:
            out.append(
                Fact(
                    name="qemu.backend_prop[memory-backend-memfd.guest-memfd]",
                    value=self.has_backend_prop("memory-backend-memfd", "guest-memfd"),
                    source=f"qom-list-properties memory-backend-memfd, {qmp}",
                )
            )
        for machine in self.machine_props:
            out.append(
                Fact(
                    name=f"qemu.machine_prop[{machine}.x-change-vmfd-on-reset]",
                    value=self.has_machine_prop("x-change-vmfd-on-reset", machine),
                    source=(
                        f"qom-list-properties {self.machine_types.get(machine, machine)}"
                        f"-machine, {qmp}"
                    ),
                )
            )
        out.append(
            Fact(
                name="qemu.qmp_commands",
                value=len(self.qmp_commands),
                source=f"query-qmp-schema (meta-type command), {qmp}",
            )
        )
        policy = self.qmp_policy()
        if policy is not None:
            out.append(
                Fact(
                    name="qemu.qmp_unsafe_commands",
                    value=len(policy.unsafe_commands()),
                    source=f"query-qmp-schema, walked by the rule of docs/security.md, {qmp}",
                )
            )
        for name in FIRMWARE_NAMES:
            out.append(
                Fact(
                    name=f"firmware[{name}]",
                    value=self.firmware.get(name),
                    source="first readable of "
                    + ", ".join("/" + p for p in FIRMWARE_PATHS[name])
                    + " (under the binary's own prefix first)",
                )
            )
        return out


class HostFacts(_Model):
    """Everything one probe saw: the kernel and each QEMU binary."""

    kvm: KvmFacts
    qemu: list[QemuFacts] = Field(default_factory=list)

    def qemu_for(self, binary: str | None = None) -> QemuFacts | None:
        """The facts of ``binary`` (as given to the probe), or the first binary when None."""
        if binary is None:
            return self.qemu[0] if self.qemu else None
        for q in self.qemu:
            if q.binary == binary:
                return q
        return None

    def facts(self) -> list[Fact]:
        out = self.kvm.facts()
        for q in self.qemu:
            out.extend(q.facts())
        return out

    def summary(self) -> dict[str, Any]:
        """The few answers people look for first (the top of ``qmpgmem probe --json``)."""
        kvm = self.kvm
        return {
            "kernel_release": kvm.kernel_release,
            "kvm": kvm.available,
            "backend": kvm.backend,
            "guest_memfd": kvm.cap("KVM_CAP_GUEST_MEMFD") > 0,
            "guest_memfd_flags": kvm.gmem_flags,
            "vm_types": kvm.vm_types,
            "memory_attributes_private": {
                vm_type: "private" in attrs for vm_type, attrs in kvm.memory_attributes.items()
            },
            "exit_hypercall": kvm.exit_hypercall,
            "qemu": [
                {
                    "binary": q.binary,
                    "version": q.version_str,
                    "confidential_types": [t for t in CONFIDENTIAL_TYPES if q.has_type(t)],
                    "memfd_guest_memfd_property": q.has_backend_prop(
                        "memory-backend-memfd", "guest-memfd"
                    ),
                    "x_change_vmfd_on_reset": q.has_machine_prop("x-change-vmfd-on-reset"),
                }
                for q in self.qemu
            ],
        }
