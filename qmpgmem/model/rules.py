"""The decisions the memory model takes from the engine, QEMU version, VM type and backend.

Why a module of plain functions: each rule here is a fact about QEMU or KVM with a source
(docs/memory-model.md lists them by the ids used in the comments, R1..R24); keeping them apart
from the interval bookkeeping lets the tests table-drive every rule and lets a reader check
one rule against its source without reading the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal, TypeAlias

from qmpgmem.model.content import ZERO, Attr, Content, Unknown

__all__ = [
    "KVM_ENGINE_CONVERSION",
    "QEMU_CONVERSION",
    "SELFTEST_ATTRIBUTES_ONLY",
    "SELFTEST_WITH_FALLOCATE",
    "ConversionPolicy",
    "Engine",
    "ModelContext",
    "RegionKind",
    "RegionSpec",
    "ResetSemantics",
    "discards_shared",
    "effective_vm_type",
    "fresh_private",
    "initial_attr",
    "initial_private",
    "initial_shared",
    "region_kind",
    "reset_semantics",
]

Engine: TypeAlias = Literal["qemu", "kvm"]

#: VM types for which QEMU puts every RAM block on a private guest_memfd (R2).
GMEM_CONFIDENTIAL: Final = ("sev-snp", "tdx")
#: VM types whose memory is encrypted without guest_memfd (R21).
ENCRYPTED: Final = ("sev", "sev-es")
#: VM types whose private pages the guest reads without hardware transformation (R4).
PLAINTEXT_PRIVATE: Final = ("default", "sw-protected")
#: VM types whose QEMU (from 11.0) rebuilds the VM fd on reset instead of exiting (R18, R19).
REBUILD_ON_RESET: Final = ("sev-snp", "tdx")
#: VM types whose vCPUs QEMU cannot reset (cpus_are_resettable() is false).
NOT_RESETTABLE: Final = ("sev-es", "sev-snp", "tdx")
QEMU_REBUILD_VERSION: Final = (11, 0)


class RegionKind(StrEnum):
    """How a region's memory is laid out for the guest and the host (R2)."""

    #: One host mapping, no guest_memfd: guest and host see the same bytes.
    PLAIN = "plain"
    #: A shared backing (what the host maps) plus a private guest_memfd; the attribute of a
    #: page picks which one the guest reaches.
    SPLIT = "split"
    #: The guest_memfd is mmap'd and is the only memory (GUEST_MEMFD_FLAG_MMAP).
    IN_PLACE = "in_place"
    #: SEV / SEV-ES: one backing the guest reads through its encryption key.
    ENCRYPTED = "encrypted"
    #: QEMU flavour ``auto`` the engine did not resolve: split or in place, the model cannot
    #: tell, so every read of the region is Unknown.
    UNRESOLVED = "unresolved"


@dataclass(frozen=True)
class RegionSpec:
    """A region as the model needs it; built from a scenario's ``Region`` by ``steps.py``."""

    id: str
    size: int
    backend: Literal["ram", "memfd", "file", "guest_memfd"] = "memfd"
    #: The scenario's flavour (guest_memfd only): auto, sev-snp, tdx, memfd-private,
    #: guest-memfd-property.
    flavour: str | None = None
    #: KVM_CREATE_GUEST_MEMFD flags the direct KVM engine uses.
    gmem_flags: tuple[str, ...] = ("mmap", "init_shared")
    #: The shared backing uses pages larger than the host page (hugetlbfs); QEMU then skips
    #: the discard on a to-private conversion (R9).
    hugetlb: bool = False
    #: What the host-visible backing holds at start, when the runner knows better than R1
    #: (e.g. it created the backing file itself and it is all zeros).
    initial: Content | None = None


@dataclass(frozen=True)
class ConversionPolicy:
    """What the VMM does to memory when it carries out a conversion (R9-R11)."""

    #: To-private discards the shared backing of the range (reads zero afterwards).
    discard_shared_on_private: bool
    #: To-shared punches the range out of the guest_memfd (private content lost).
    punch_private_on_shared: bool
    #: Where the behaviour comes from, for reports.
    source: str


QEMU_CONVERSION: Final = ConversionPolicy(
    discard_shared_on_private=True,
    punch_private_on_shared=True,
    source="QEMU accel/kvm/kvm-all.c kvm_convert_memory",
)
KVM_ENGINE_CONVERSION: Final = ConversionPolicy(
    discard_shared_on_private=True,
    punch_private_on_shared=True,
    source="qmpgmem/engines/kvm/engine.py KvmEngine._discard_other_side (as QEMU does)",
)
SELFTEST_ATTRIBUTES_ONLY: Final = ConversionPolicy(
    discard_shared_on_private=False,
    punch_private_on_shared=False,
    source="private_mem_conversions_test.c handle_exit_hypercall without MAP_GPA_DO_FALLOCATE",
)
SELFTEST_WITH_FALLOCATE: Final = ConversionPolicy(
    discard_shared_on_private=False,
    punch_private_on_shared=True,
    source="private_mem_conversions_test.c handle_exit_hypercall with MAP_GPA_DO_FALLOCATE",
)


@dataclass(frozen=True)
class ModelContext:
    """Who runs the VM; the rules depend on it."""

    engine: Engine
    #: QEMU's version as read from the binary; None when unknown or for the KVM engine.
    qemu_version: tuple[int, ...] | None = None
    #: kvm_intel, kvm_amd or kvm_pvm (from /sys/module); informational for the rules so far.
    kvm_backend: str | None = None
    vm_type: str = "default"
    #: ``-machine ...,x-change-vmfd-on-reset=on`` was given (QEMU >= 11.0).
    change_vmfd_on_reset: bool = False
    #: Overrides the engine's conversion behaviour (None: what the engine itself does).
    conversion: ConversionPolicy | None = field(default=None)

    def conversion_policy(self) -> ConversionPolicy:
        if self.conversion is not None:
            return self.conversion
        return QEMU_CONVERSION if self.engine == "qemu" else KVM_ENGINE_CONVERSION


class ResetSemantics(StrEnum):
    """What a system reset does to guest memory (R17-R20)."""

    #: Memory and attributes stay as they are.
    KEEP = "keep"
    #: QEMU closes the VM fd and builds a new one with new guest_memfds.
    REBUILD_VMFD = "rebuild-vmfd"
    #: QEMU cannot reset this guest and exits; nothing can be predicted afterwards.
    TERMINATES = "terminates"
    #: The model does not know what this QEMU does (its version is unknown).
    UNKNOWN = "unknown"


# -- R2: the kind of a region ---------------------------------------------------------------


def region_kind(spec: RegionSpec, ctx: ModelContext) -> RegionKind:
    """Which memory layout a region gets on this engine and VM type (R2)."""
    if ctx.vm_type in ENCRYPTED:
        return RegionKind.ENCRYPTED
    if ctx.engine == "qemu":
        if spec.backend == "guest_memfd":
            # memory-backend-memfd,guest-memfd=on (unmerged proposal): init-shared guest_memfd
            # mapped as the RAM itself. Every other flavour keeps a shared backing.
            if spec.flavour == "guest-memfd-property":
                return RegionKind.IN_PLACE
            if spec.flavour in (None, "auto"):
                return RegionKind.UNRESOLVED
            return RegionKind.SPLIT
        return RegionKind.SPLIT if ctx.vm_type in GMEM_CONFIDENTIAL else RegionKind.PLAIN
    if spec.backend != "guest_memfd":
        return RegionKind.PLAIN
    return RegionKind.IN_PLACE if "mmap" in spec.gmem_flags else RegionKind.SPLIT


def effective_vm_type(vm_type: str, flavour: str | None) -> str:
    """The VM type a QEMU flavour makes (R2): ``sev-snp`` and ``tdx`` are confidential guests,
    ``memfd-private`` comes with the out-of-tree ``sw-protected-vm`` object."""
    if flavour in ("sev-snp", "tdx"):
        return flavour
    if flavour == "memfd-private" and vm_type == "default":
        return "sw-protected"
    return vm_type


# -- R1, R3, R4: the starting state -----------------------------------------------------------


def initial_shared(spec: RegionSpec) -> Content:
    """The host-visible backing at start (R1): fresh anonymous, memfd and guest_memfd pages are
    zero; a backing file holds whatever it held."""
    if spec.initial is not None:
        return spec.initial
    if spec.backend == "file":
        return Unknown("backend file: the file's previous content")
    return ZERO


def fresh_private(ctx: ModelContext) -> Content:
    """What the guest reads from a private page the guest_memfd has just allocated (R4)."""
    if ctx.vm_type in PLAINTEXT_PRIVATE:
        return ZERO
    return Unknown(f"fresh private page of a {ctx.vm_type} guest (hardware encryption)")


def initial_private(kind: RegionKind, ctx: ModelContext) -> Content:
    """The guest-only layer at start: a fresh guest_memfd, or the encrypted view (R4, R21)."""
    if kind is RegionKind.ENCRYPTED:
        return Unknown(f"{ctx.vm_type} guest reads host memory through its encryption key")
    return fresh_private(ctx)


def initial_attr(spec: RegionSpec, kind: RegionKind, ctx: ModelContext) -> Attr:
    """The KVM memory attribute of every page at start (R3)."""
    if kind is RegionKind.SPLIT and ctx.engine == "qemu":
        if spec.flavour == "memfd-private":
            # Out-of-tree UPM trees set RAM_DEFAULT_PRIVATE only for TDX.
            return Attr.PRIVATE if ctx.vm_type == "tdx" else Attr.SHARED
        # kvm_set_phys_mem(): a slot with a guest_memfd is made private when it is added.
        return Attr.PRIVATE
    if kind is RegionKind.IN_PLACE and ctx.engine == "kvm":
        return Attr.SHARED if "init_shared" in spec.gmem_flags else Attr.PRIVATE
    # KVM's attributes start at 0 (shared) for every gfn.
    return Attr.SHARED


# -- R9: conversions ---------------------------------------------------------------------------


def discards_shared(spec: RegionSpec, ctx: ModelContext) -> bool:
    """Does a to-private conversion discard the shared backing of this region (R9)?"""
    if not ctx.conversion_policy().discard_shared_on_private:
        return False
    # kvm_convert_memory skips the discard when rb->page_size != host page size (hugetlb).
    return not (ctx.engine == "qemu" and spec.hugetlb)


# -- R17-R20: reset ----------------------------------------------------------------------------


def reset_semantics(ctx: ModelContext) -> ResetSemantics:
    """What ``system_reset`` (or the KVM engine's reset) does to memory here."""
    if ctx.engine == "kvm":
        # The direct engine resets vCPU state only; it owns the memslots and keeps them (R20).
        return ResetSemantics.KEEP
    rebuild_capable = ctx.qemu_version is not None and ctx.qemu_version >= QEMU_REBUILD_VERSION
    if ctx.vm_type in NOT_RESETTABLE:
        if ctx.qemu_version is None:
            return ResetSemantics.UNKNOWN
        if rebuild_capable and ctx.vm_type in REBUILD_ON_RESET:
            return ResetSemantics.REBUILD_VMFD  # R19
        return ResetSemantics.TERMINATES  # R18
    if ctx.change_vmfd_on_reset:
        if ctx.qemu_version is None:
            return ResetSemantics.UNKNOWN
        if rebuild_capable:
            return ResetSemantics.REBUILD_VMFD
        # An older QEMU does not know the property and refuses to start: nothing to model.
    return ResetSemantics.KEEP  # R17
