"""The rule functions, one table per rule (ids as in docs/memory-model.md)."""

from __future__ import annotations

import pytest

from qmpgmem.model.content import ZERO, Attr, Unknown
from qmpgmem.model.rules import (
    KVM_ENGINE_CONVERSION,
    QEMU_CONVERSION,
    SELFTEST_ATTRIBUTES_ONLY,
    SELFTEST_WITH_FALLOCATE,
    ModelContext,
    RegionKind,
    RegionSpec,
    ResetSemantics,
    discards_shared,
    effective_vm_type,
    fresh_private,
    initial_attr,
    initial_private,
    initial_shared,
    region_kind,
    reset_semantics,
)

Q10 = (10, 0, 2)
Q11 = (11, 1, 3)


def spec(backend: str = "memfd", **kw: object) -> RegionSpec:
    return RegionSpec(id="r", size=0x10000, backend=backend, **kw)  # type: ignore[arg-type]


# -- R2 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "vm_type", "region", "kind"),
    [
        ("qemu", "default", spec("ram"), RegionKind.PLAIN),
        ("qemu", "default", spec("memfd"), RegionKind.PLAIN),
        ("qemu", "default", spec("file"), RegionKind.PLAIN),
        ("qemu", "sev-snp", spec("memfd"), RegionKind.SPLIT),
        ("qemu", "tdx", spec("ram"), RegionKind.SPLIT),
        ("qemu", "sev", spec("memfd"), RegionKind.ENCRYPTED),
        ("qemu", "sev-es", spec("memfd"), RegionKind.ENCRYPTED),
        ("qemu", "sev-snp", spec("guest_memfd", flavour="sev-snp"), RegionKind.SPLIT),
        ("qemu", "tdx", spec("guest_memfd", flavour="tdx"), RegionKind.SPLIT),
        ("qemu", "default", spec("guest_memfd", flavour="memfd-private"), RegionKind.SPLIT),
        ("qemu", "default", spec("guest_memfd", flavour="auto"), RegionKind.UNRESOLVED),
        ("qemu", "default", spec("guest_memfd"), RegionKind.UNRESOLVED),
        (
            "qemu",
            "default",
            spec("guest_memfd", flavour="guest-memfd-property"),
            RegionKind.IN_PLACE,
        ),
        ("kvm", "default", spec("memfd"), RegionKind.PLAIN),
        ("kvm", "sw-protected", spec("ram"), RegionKind.PLAIN),
        ("kvm", "default", spec("guest_memfd"), RegionKind.IN_PLACE),
        ("kvm", "default", spec("guest_memfd", gmem_flags=("mmap",)), RegionKind.IN_PLACE),
        ("kvm", "sw-protected", spec("guest_memfd", gmem_flags=()), RegionKind.SPLIT),
        ("kvm", "sev", spec("guest_memfd"), RegionKind.ENCRYPTED),
    ],
)
def test_region_kind(engine: str, vm_type: str, region: RegionSpec, kind: RegionKind) -> None:
    ctx = ModelContext(engine=engine, vm_type=vm_type)  # type: ignore[arg-type]
    assert region_kind(region, ctx) is kind


@pytest.mark.parametrize(
    ("vm_type", "flavour", "effective"),
    [
        ("default", None, "default"),
        ("default", "sev-snp", "sev-snp"),
        ("default", "tdx", "tdx"),
        ("default", "memfd-private", "sw-protected"),
        ("tdx", "memfd-private", "tdx"),
        ("default", "guest-memfd-property", "default"),
        ("sw-protected", "auto", "sw-protected"),
    ],
)
def test_effective_vm_type(vm_type: str, flavour: str | None, effective: str) -> None:
    assert effective_vm_type(vm_type, flavour) == effective


# -- R1, R4 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "expected"),
    [
        (spec("ram"), ZERO),
        (spec("memfd"), ZERO),
        (spec("guest_memfd"), ZERO),
        (spec("file"), None),  # Unknown
        (spec("file", initial=ZERO), ZERO),
    ],
)
def test_initial_shared(region: RegionSpec, expected: object) -> None:
    got = initial_shared(region)
    if expected is None:
        assert isinstance(got, Unknown)
    else:
        assert got == expected


@pytest.mark.parametrize(
    ("vm_type", "zero"),
    [
        ("default", True),
        ("sw-protected", True),
        ("sev-snp", False),
        ("tdx", False),
        ("sev", False),
    ],
)
def test_fresh_private(vm_type: str, zero: bool) -> None:
    got = fresh_private(ModelContext(engine="kvm", vm_type=vm_type))
    assert (got == ZERO) is zero
    assert zero or isinstance(got, Unknown)


def test_initial_private_of_encrypted_is_unknown() -> None:
    ctx = ModelContext(engine="qemu", vm_type="sev")
    assert isinstance(initial_private(RegionKind.ENCRYPTED, ctx), Unknown)
    assert initial_private(RegionKind.SPLIT, ModelContext(engine="kvm")) == ZERO


# -- R3 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("engine", "vm_type", "region", "attr"),
    [
        ("qemu", "default", spec("memfd"), Attr.SHARED),
        ("qemu", "sev-snp", spec("memfd"), Attr.PRIVATE),  # kvm_set_phys_mem
        ("qemu", "tdx", spec("guest_memfd", flavour="tdx"), Attr.PRIVATE),
        ("qemu", "sw-protected", spec("guest_memfd", flavour="memfd-private"), Attr.SHARED),
        ("qemu", "tdx", spec("guest_memfd", flavour="memfd-private"), Attr.PRIVATE),
        ("qemu", "default", spec("guest_memfd", flavour="guest-memfd-property"), Attr.SHARED),
        ("kvm", "default", spec("guest_memfd"), Attr.SHARED),  # INIT_SHARED
        ("kvm", "default", spec("guest_memfd", gmem_flags=("mmap",)), Attr.PRIVATE),
        ("kvm", "sw-protected", spec("guest_memfd", gmem_flags=()), Attr.SHARED),
        ("kvm", "default", spec("memfd"), Attr.SHARED),
    ],
)
def test_initial_attr(engine: str, vm_type: str, region: RegionSpec, attr: Attr) -> None:
    ctx = ModelContext(engine=engine, vm_type=vm_type)  # type: ignore[arg-type]
    assert initial_attr(region, region_kind(region, ctx), ctx) is attr


# -- R9-R11 ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctx", "region", "discards", "punches"),
    [
        (ModelContext(engine="qemu"), spec("memfd"), True, True),
        (ModelContext(engine="qemu"), spec("file", hugetlb=True), False, True),
        (ModelContext(engine="kvm"), spec("guest_memfd"), True, True),
        (
            ModelContext(engine="kvm", conversion=SELFTEST_ATTRIBUTES_ONLY),
            spec("ram"),
            False,
            False,
        ),
        (ModelContext(engine="kvm", conversion=SELFTEST_WITH_FALLOCATE), spec("ram"), False, True),
        (
            ModelContext(engine="kvm", conversion=QEMU_CONVERSION),
            spec("ram", hugetlb=True),
            True,
            True,
        ),
    ],
)
def test_conversion_policy(
    ctx: ModelContext, region: RegionSpec, discards: bool, punches: bool
) -> None:
    assert discards_shared(region, ctx) is discards
    assert ctx.conversion_policy().punch_private_on_shared is punches


def test_default_policies() -> None:
    assert ModelContext(engine="qemu").conversion_policy() is QEMU_CONVERSION
    assert ModelContext(engine="kvm").conversion_policy() is KVM_ENGINE_CONVERSION


# -- R17-R20 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ctx", "semantics"),
    [
        (ModelContext(engine="kvm", vm_type="sev-snp"), ResetSemantics.KEEP),
        (ModelContext(engine="qemu", qemu_version=Q10), ResetSemantics.KEEP),
        (ModelContext(engine="qemu", qemu_version=None), ResetSemantics.KEEP),
        (ModelContext(engine="qemu", qemu_version=Q10, vm_type="sev"), ResetSemantics.KEEP),
        (
            ModelContext(engine="qemu", qemu_version=Q10, vm_type="sev-snp"),
            ResetSemantics.TERMINATES,
        ),
        (
            ModelContext(engine="qemu", qemu_version=(10, 2), vm_type="tdx"),
            ResetSemantics.TERMINATES,
        ),
        (
            ModelContext(engine="qemu", qemu_version=(11, 0), vm_type="tdx"),
            ResetSemantics.REBUILD_VMFD,
        ),
        (
            ModelContext(engine="qemu", qemu_version=Q11, vm_type="sev-snp"),
            ResetSemantics.REBUILD_VMFD,
        ),
        (
            ModelContext(engine="qemu", qemu_version=Q11, vm_type="sev-es"),
            ResetSemantics.TERMINATES,
        ),
        (ModelContext(engine="qemu", qemu_version=None, vm_type="sev-snp"), ResetSemantics.UNKNOWN),
        (
            ModelContext(engine="qemu", qemu_version=Q11, change_vmfd_on_reset=True),
            ResetSemantics.REBUILD_VMFD,
        ),
        (
            ModelContext(engine="qemu", qemu_version=None, change_vmfd_on_reset=True),
            ResetSemantics.UNKNOWN,
        ),
    ],
)
def test_reset_semantics(ctx: ModelContext, semantics: ResetSemantics) -> None:
    assert reset_semantics(ctx) is semantics
