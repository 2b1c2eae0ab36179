"""MemoryModel, rule by rule: a table of (context, regions, operations) and what each view reads.

Notation: a check lists the runs a view reads as ``(offset, size, what)`` where ``what`` is
"zero", "seed N" or "?" (Unknown, any reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from qmpgmem.errors import ScenarioError
from qmpgmem.model import (
    SELFTEST_ATTRIBUTES_ONLY,
    SELFTEST_WITH_FALLOCATE,
    ZERO,
    Attr,
    MemoryModel,
    ModelContext,
    ModelRangeError,
    Pattern,
    RegionKind,
    RegionSpec,
    ResetSemantics,
    Unknown,
    UnpredictableContent,
)
from qmpgmem.model.content import Content

K4 = 0x1000
SIZE = 0x8000  # 8 pages

QEMU10 = ModelContext(engine="qemu", qemu_version=(10, 0, 2))
QEMU11 = ModelContext(engine="qemu", qemu_version=(11, 1, 3))
SNP10 = ModelContext(engine="qemu", qemu_version=(10, 0, 2), vm_type="sev-snp")
SNP11 = ModelContext(engine="qemu", qemu_version=(11, 1, 3), vm_type="sev-snp")
QEMU_SW = ModelContext(engine="qemu", qemu_version=(10, 0, 2), vm_type="sw-protected")
KVM = ModelContext(engine="kvm", kvm_backend="kvm_pvm")
KVM_SW = ModelContext(engine="kvm", kvm_backend="kvm_intel", vm_type="sw-protected")
KVM_SELFTEST = ModelContext(
    engine="kvm",
    kvm_backend="kvm_intel",
    vm_type="sw-protected",
    conversion=SELFTEST_ATTRIBUTES_ONLY,
)
KVM_SW_FALLOC = ModelContext(
    engine="kvm",
    kvm_backend="kvm_intel",
    vm_type="sw-protected",
    conversion=SELFTEST_WITH_FALLOCATE,
)
SEV = ModelContext(engine="qemu", qemu_version=(10, 0, 2), vm_type="sev")

MEMFD = RegionSpec("m", SIZE, "memfd")
RAM = RegionSpec("m", SIZE, "ram")
HUGE = RegionSpec("m", SIZE, "memfd", hugetlb=True)
FILE = RegionSpec("m", SIZE, "file")
PRIV = RegionSpec("m", SIZE, "guest_memfd", flavour="memfd-private")
PRIV_HUGE = RegionSpec("m", SIZE, "guest_memfd", flavour="memfd-private", hugetlb=True)
GMEM_INPLACE = RegionSpec("m", SIZE, "guest_memfd")  # mmap + init_shared
GMEM_INPLACE_PRIVATE = RegionSpec("m", SIZE, "guest_memfd", gmem_flags=("mmap",))
GMEM_SPLIT = RegionSpec("m", SIZE, "guest_memfd", gmem_flags=())

Run = tuple[int, int, str]
Check = tuple[str, int, int, list[Run]]


@dataclass
class Case:
    id: str
    ctx: ModelContext
    region: RegionSpec
    ops: list[tuple[Any, ...]]
    checks: list[Check]
    attrs: list[tuple[int, int, Attr]] = field(default_factory=list)


def what(c: Content) -> str:
    if isinstance(c, Unknown):
        return "?"
    if isinstance(c, Pattern):
        return f"seed {c.seed}"
    return "zero"


def whole(view: str, w: str) -> Check:
    return (view, 0, SIZE, [(0, SIZE, w)])


def both(w: str) -> list[Check]:
    return [whole("guest", w), whole("host", w)]


CASES = [
    # -- R1 initial content ------------------------------------------------------------------
    Case("R1 fresh memfd reads zero", QEMU10, MEMFD, [], both("zero")),
    Case("R1 fresh ram reads zero", QEMU10, RAM, [], both("zero")),
    Case("R1 backing file is unknown", QEMU10, FILE, [], both("?")),
    Case(
        "R1 runner-created file reads zero",
        QEMU10,
        RegionSpec("m", SIZE, "file", initial=ZERO),
        [],
        both("zero"),
    ),
    Case("R1 fresh in-place guest_memfd reads zero", KVM, GMEM_INPLACE, [], both("zero")),
    # -- R5/R6/R7 writes and reads on plain memory --------------------------------------------
    Case(
        "R5 guest write seen by guest and host",
        QEMU10,
        MEMFD,
        [("write", K4, 2 * K4, 7)],
        [
            ("guest", 0, SIZE, [(0, K4, "zero"), (K4, 2 * K4, "seed 7"), (3 * K4, 5 * K4, "zero")]),
            ("host", K4, 2 * K4, [(K4, 2 * K4, "seed 7")]),
        ],
    ),
    Case(
        "R6 host write seen by the guest",
        QEMU10,
        MEMFD,
        [("host_write", 0, SIZE, 3)],
        both("seed 3"),
    ),
    Case(
        "R5 later write wins, sub-word ranges of 8 bytes",
        QEMU10,
        MEMFD,
        [("write", 0, SIZE, 1), ("write", 8, 16, 2)],
        [("guest", 0, 32, [(0, 8, "seed 1"), (8, 16, "seed 2"), (24, 8, "seed 1")])],
    ),
    Case(
        "R5 overlapping writes with the same seed merge",
        QEMU10,
        MEMFD,
        [("write", 0, K4, 4), ("write", K4, K4, 4), ("write", 0x800, K4, 4)],
        [("guest", 0, 2 * K4, [(0, 2 * K4, "seed 4")])],
    ),
    # -- R8 refused conversions ----------------------------------------------------------------
    Case(
        "R8 refused to-private changes nothing",
        QEMU10,
        MEMFD,
        [("write", 0, SIZE, 5), ("convert", 0, SIZE, True, False)],
        both("seed 5"),
        attrs=[(0, SIZE, Attr.SHARED)],
    ),
    Case(
        "R8 refused conversion on guest_memfd changes nothing",
        KVM,
        GMEM_INPLACE,
        [("write", 0, SIZE, 5), ("convert", 0, K4, True, False)],
        both("seed 5"),
        attrs=[(0, SIZE, Attr.SHARED)],
    ),
    # -- R12 conversion without guest_memfd ------------------------------------------------------
    Case(
        "R12 private access to memory without guest_memfd is unknown",
        KVM,
        MEMFD,
        [("write", 0, SIZE, 5), ("convert", K4, K4, True, True), ("write", K4, K4, 6)],
        [
            ("guest", 0, 3 * K4, [(0, K4, "seed 5"), (K4, K4, "?"), (2 * K4, K4, "seed 5")]),
            ("host", 0, 3 * K4, [(0, 3 * K4, "seed 5")]),
        ],
        attrs=[(0, K4, Attr.SHARED), (K4, K4, Attr.PRIVATE), (2 * K4, 6 * K4, Attr.SHARED)],
    ),
    # -- R3/R9/R10 QEMU with a split guest_memfd ------------------------------------------------
    Case(
        "R3 QEMU SNP starts private; fresh private is unknown, host zero",
        SNP10,
        MEMFD,
        [],
        [whole("guest", "?"), whole("host", "zero")],
        attrs=[(0, SIZE, Attr.PRIVATE)],
    ),
    Case(
        "R5 SNP private write is invisible to the host",
        SNP10,
        MEMFD,
        [("write", 0, SIZE, 9)],
        [whole("guest", "seed 9"), whole("host", "zero")],
    ),
    Case(
        "R10 SNP to-shared: guest reads the shared backing, the host's write",
        SNP10,
        MEMFD,
        [("write", 0, SIZE, 9), ("convert", 0, K4, False, True), ("host_write", 0, K4, 4)],
        [
            ("guest", 0, 2 * K4, [(0, K4, "seed 4"), (K4, K4, "seed 9")]),
            ("host", 0, 2 * K4, [(0, K4, "seed 4"), (K4, K4, "zero")]),
        ],
    ),
    Case(
        "R9 SNP to-private discards the shared backing",
        SNP10,
        MEMFD,
        [
            ("convert", 0, SIZE, False, True),
            ("write", 0, SIZE, 2),
            ("convert", 0, K4, True, True),
        ],
        [
            ("host", 0, 2 * K4, [(0, K4, "zero"), (K4, K4, "seed 2")]),
            ("guest", 0, 2 * K4, [(0, K4, "?"), (K4, K4, "seed 2")]),
        ],
    ),
    Case(
        "R9 plaintext QEMU split: shared write, to-private, guest reads zero",
        QEMU_SW,
        PRIV,
        [("write", 0, SIZE, 7), ("convert", 0, SIZE, True, True)],
        [whole("guest", "zero"), whole("host", "zero")],
        attrs=[(0, SIZE, Attr.PRIVATE)],
    ),
    Case(
        "R10 round trip through private leaves zero (discard + punch)",
        QEMU_SW,
        PRIV,
        [
            ("write", 0, SIZE, 7),
            ("convert", 0, SIZE, True, True),
            ("write", 0, SIZE, 9),
            ("convert", 0, SIZE, False, True),
        ],
        both("zero"),
        attrs=[(0, SIZE, Attr.SHARED)],
    ),
    Case(
        "R10 private content is lost on to-shared, even converted back",
        QEMU_SW,
        PRIV,
        [
            ("convert", 0, SIZE, True, True),
            ("write", 0, SIZE, 9),
            ("convert", 0, K4, False, True),
            ("convert", 0, K4, True, True),
        ],
        [("guest", 0, 2 * K4, [(0, K4, "zero"), (K4, K4, "seed 9")])],
    ),
    Case(
        "R9 hugetlb shared backing is not discarded",
        QEMU_SW,
        PRIV_HUGE,
        [("write", 0, SIZE, 7), ("convert", 0, SIZE, True, True)],
        [whole("guest", "zero"), whole("host", "seed 7")],
    ),
    Case(
        "R9 hugetlb: back to shared, the guest sees its old shared data",
        QEMU_SW,
        PRIV_HUGE,
        [
            ("write", 0, SIZE, 7),
            ("convert", 0, SIZE, True, True),
            ("write", 0, SIZE, 8),
            ("convert", 0, SIZE, False, True),
        ],
        both("seed 7"),
    ),
    # -- R11 the KVM engine, selftest semantics --------------------------------------------------
    Case(
        "R11 selftest: host keeps seeing shared data while the guest writes private",
        KVM_SELFTEST,
        GMEM_SPLIT,
        [("write", 0, SIZE, 1), ("convert", K4, K4, True, True), ("write", K4, K4, 2)],
        [
            ("guest", 0, 3 * K4, [(0, K4, "seed 1"), (K4, K4, "seed 2"), (2 * K4, K4, "seed 1")]),
            ("host", 0, SIZE, [(0, SIZE, "seed 1")]),
        ],
    ),
    Case(
        "R11 selftest: back to shared the guest sees the shared data, then the host's",
        KVM_SELFTEST,
        GMEM_SPLIT,
        [
            ("write", 0, SIZE, 1),
            ("convert", K4, K4, True, True),
            ("write", K4, K4, 2),
            ("convert", K4, K4, False, True),
        ],
        both("seed 1"),
    ),
    Case(
        "R11 selftest: host write to shared memory reaches the guest after to-shared",
        KVM_SELFTEST,
        GMEM_SPLIT,
        [
            ("convert", 0, K4, True, True),
            ("write", 0, K4, 2),
            ("convert", 0, K4, False, True),
            ("host_write", 0, K4, 3),
        ],
        [("guest", 0, K4, [(0, K4, "seed 3")])],
    ),
    Case(
        "R11 unpunched private content after a round trip is unknown",
        KVM_SELFTEST,
        GMEM_SPLIT,
        [
            ("convert", 0, K4, True, True),
            ("write", 0, K4, 2),
            ("convert", 0, K4, False, True),
            ("convert", 0, K4, True, True),
        ],
        [("guest", 0, 2 * K4, [(0, K4, "?"), (K4, K4, "zero")])],
    ),
    Case(
        "R9/R10 KVM engine discards and punches as QEMU: a round trip reads zero",
        KVM_SW,
        GMEM_SPLIT,
        [
            ("write", 0, SIZE, 1),
            ("convert", 0, K4, True, True),
            ("write", 0, K4, 2),
            ("convert", 0, K4, False, True),
        ],
        [
            ("guest", 0, 2 * K4, [(0, K4, "zero"), (K4, K4, "seed 1")]),
            ("host", 0, 2 * K4, [(0, K4, "zero"), (K4, K4, "seed 1")]),
        ],
    ),
    Case(
        "R10 selftest with fallocate: private punched on to-shared reads zero again",
        KVM_SW_FALLOC,
        GMEM_SPLIT,
        [
            ("convert", 0, K4, True, True),
            ("write", 0, K4, 2),
            ("convert", 0, K4, False, True),
            ("convert", 0, K4, True, True),
        ],
        [("guest", 0, K4, [(0, K4, "zero")])],
    ),
    # -- R13 in-place guest_memfd ---------------------------------------------------------------
    Case(
        "R6 in-place: host write seen by the guest and back (guest_memfd_test)",
        KVM,
        GMEM_INPLACE,
        [("host_write", 0, SIZE, 0xAA), ("write", K4, K4, 0xFF)],
        [
            ("guest", 0, 2 * K4, [(0, K4, "seed 170"), (K4, K4, "seed 255")]),
            ("host", 0, 2 * K4, [(0, K4, "seed 170"), (K4, K4, "seed 255")]),
        ],
    ),
    Case(
        "R13 in-place conversion makes the range unknown",
        KVM_SW,
        GMEM_INPLACE,
        [("write", 0, SIZE, 5), ("convert", K4, K4, True, True)],
        [
            ("guest", 0, 3 * K4, [(0, K4, "seed 5"), (K4, K4, "?"), (2 * K4, K4, "seed 5")]),
            ("host", 0, 2 * K4, [(0, K4, "seed 5"), (K4, K4, "?")]),
        ],
    ),
    Case(
        "R6 in-place without INIT_SHARED: host view unknown, guest reads zero",
        KVM,
        GMEM_INPLACE_PRIVATE,
        [],
        [whole("guest", "zero"), whole("host", "?")],
        attrs=[(0, SIZE, Attr.PRIVATE)],
    ),
    Case(
        "R6 in-place host write stops at the first private page",
        KVM_SW,
        GMEM_INPLACE,
        [("convert", 2 * K4, K4, True, True), ("write", 0, SIZE, 1), ("host_write", 0, SIZE, 2)],
        [
            ("guest", 0, SIZE, [(0, 2 * K4, "seed 2"), (2 * K4, 6 * K4, "?")]),
        ],
    ),
    # -- R14/R15 punch and allocate ---------------------------------------------------------------
    Case(
        "R14 in-place punch reads zero, neighbours unchanged (test_mmap_supported)",
        KVM,
        GMEM_INPLACE,
        [("host_write", 0, SIZE, 0xAA), ("punch_hole", 0, K4)],
        [
            ("guest", 0, 2 * K4, [(0, K4, "zero"), (K4, K4, "seed 170")]),
            ("host", 0, 2 * K4, [(0, K4, "zero"), (K4, K4, "seed 170")]),
        ],
    ),
    Case(
        "R14 split punch zeroes private memory only (guest_test_punch_hole)",
        KVM_SELFTEST,
        GMEM_SPLIT,
        [
            ("write", 0, SIZE, 1),
            ("convert", 0, SIZE, True, True),
            ("write", 0, SIZE, 2),
            ("punch_hole", K4, K4),
        ],
        [
            ("guest", 0, 3 * K4, [(0, K4, "seed 2"), (K4, K4, "zero"), (2 * K4, K4, "seed 2")]),
            ("host", 0, SIZE, [(0, SIZE, "seed 1")]),
        ],
    ),
    Case(
        "R15 allocate changes nothing",
        KVM,
        GMEM_INPLACE,
        [("write", 0, SIZE, 3), ("allocate", 0, SIZE)],
        both("seed 3"),
    ),
    Case(
        "R2 unresolved QEMU flavour auto: every read unknown, operations allowed",
        QEMU10,
        RegionSpec("m", SIZE, "guest_memfd", flavour="auto"),
        [
            ("write", 0, SIZE, 1),
            ("punch_hole", 0, K4),
            ("allocate", 0, K4),
            ("convert", 0, K4, True, True),
        ],
        both("?"),
    ),
    # -- R16 stop/cont ------------------------------------------------------------------------
    Case(
        "R16 stop and cont change nothing",
        QEMU10,
        MEMFD,
        [("write", 0, SIZE, 3), ("stop",), ("cont",)],
        both("seed 3"),
    ),
    # -- R17-R20 reset ------------------------------------------------------------------------
    Case(
        "R17 QEMU keeps RAM across system_reset",
        QEMU10,
        MEMFD,
        [("write", 0, SIZE, 3), ("reset",)],
        both("seed 3"),
    ),
    Case(
        "R18 QEMU 10 cannot reset SNP: everything unknown",
        SNP10,
        MEMFD,
        [("host_write", 0, SIZE, 3), ("reset",)],
        both("?"),
    ),
    Case(
        "R19 QEMU 11 rebuilds SNP: private lost, shared kept, attributes private again",
        SNP11,
        MEMFD,
        [("convert", 0, K4, False, True), ("host_write", 0, SIZE, 3), ("reset",)],
        [whole("guest", "?"), whole("host", "seed 3")],
        attrs=[(0, SIZE, Attr.PRIVATE)],
    ),
    Case(
        "R19 rebuild on plaintext split: private reads zero, shared kept",
        QEMU_SW,
        PRIV,
        [
            ("write", 0, SIZE, 1),
            ("convert", 0, K4, True, True),
            ("write", 0, K4, 2),
            ("reset", ResetSemantics.REBUILD_VMFD),
        ],
        [("guest", 0, 2 * K4, [(0, K4, "zero"), (K4, K4, "seed 1")])],
        attrs=[(0, SIZE, Attr.SHARED)],
    ),
    Case(
        "R19 x-change-vmfd-on-reset on plain RAM keeps content",
        ModelContext(engine="qemu", qemu_version=(11, 1, 3), change_vmfd_on_reset=True),
        MEMFD,
        [("write", 0, SIZE, 3), ("reset",)],
        both("seed 3"),
    ),
    Case(
        "R20 KVM engine reset keeps memory and attributes",
        KVM_SW,
        GMEM_SPLIT,
        [("convert", 0, K4, True, True), ("write", 0, SIZE, 3), ("reset",)],
        [whole("guest", "seed 3"), ("host", 0, K4, [(0, K4, "zero")])],
        attrs=[(0, K4, Attr.PRIVATE), (K4, 7 * K4, Attr.SHARED)],
    ),
    # -- R21 encrypted guests -----------------------------------------------------------------
    Case(
        "R21 SEV: fresh memory unknown to the guest",
        SEV,
        MEMFD,
        [],
        [whole("guest", "?"), whole("host", "zero")],
    ),
    Case(
        "R21 SEV: guest write unknown to the host",
        SEV,
        MEMFD,
        [("write", 0, SIZE, 1)],
        [whole("guest", "seed 1"), whole("host", "?")],
    ),
    Case(
        "R21 SEV: host write unknown to the guest",
        SEV,
        MEMFD,
        [("write", 0, SIZE, 1), ("host_write", 0, K4, 2)],
        [
            ("guest", 0, 2 * K4, [(0, K4, "?"), (K4, K4, "seed 1")]),
            ("host", 0, K4, [(0, K4, "seed 2")]),
        ],
    ),
]


def run_ops(m: MemoryModel, ops: list[tuple[Any, ...]]) -> None:
    for name, *args in ops:
        method = getattr(m, name)
        if name in ("stop", "cont", "reset"):
            method(*args)
        else:
            method("m", *args)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule(case: Case) -> None:
    m = MemoryModel([case.region], case.ctx)
    run_ops(m, case.ops)
    for view, off, size, expected in case.checks:
        got = [(o, s, what(c)) for o, s, c in m.expected_content("m", off, size, view)]  # type: ignore[arg-type]
        assert got == expected, f"{view} view: {m.describe('m', off, size, view)}"  # type: ignore[arg-type]
    if case.attrs:
        assert m.attributes("m", 0, SIZE) == case.attrs


# -- predictions ---------------------------------------------------------------------------------


def test_describe_names_seeds_and_offsets() -> None:
    m = MemoryModel([MEMFD], QEMU10)
    m.write("m", 0, 0x2000, 7)
    assert m.describe("m", 0, 0x4000) == (
        "pattern seed 7 over [0x0, 0x2000), zero over [0x2000, 0x4000)"
    )


def test_describe_gives_the_reason_for_unknown() -> None:
    m = MemoryModel([GMEM_INPLACE_PRIVATE], KVM)
    text = m.describe("m", 0, K4, "host")
    assert text.startswith("unknown (") and "SIGBUS" in text


def test_unknown_predicts_no_hash_and_no_bytes() -> None:
    m = MemoryModel([FILE], QEMU10)
    m.write("m", 0, K4, 1)
    assert m.expected_hash("m", 0, K4) is not None
    assert m.expected_hash("m", 0, 2 * K4) is None
    with pytest.raises(UnpredictableContent) as info:
        m.expected_bytes("m", 0, 2 * K4)
    assert info.value.unknown[0][:2] == (K4, K4)
    assert "file" in str(info.value)


def test_observe_turns_unknown_into_known() -> None:
    m = MemoryModel([FILE], QEMU10)
    m.observe("m", 0, SIZE, ZERO, "guest")
    assert m.expected_content("m", 0, SIZE) == [(0, SIZE, ZERO)]


def test_observe_skips_layers_the_reader_cannot_reach() -> None:
    m = MemoryModel([GMEM_INPLACE_PRIVATE], KVM)
    m.observe("m", 0, SIZE, Pattern(3), "host")  # host cannot read private pages
    assert what(m.expected_content("m", 0, SIZE, "guest")[0][2]) == "zero"


def test_forget_one_region() -> None:
    m = MemoryModel([MEMFD, RegionSpec("n", SIZE, "memfd")], QEMU10)
    m.forget("test", "n")
    assert m.expected_content("m", 0, SIZE) == [(0, SIZE, ZERO)]
    assert m.expected_content("n", 0, SIZE) == [(0, SIZE, Unknown("test"))]


def test_kind_and_regions() -> None:
    m = MemoryModel([MEMFD, RegionSpec("g", SIZE, "guest_memfd")], KVM)
    assert m.region_ids == ["m", "g"]
    assert m.kind("m") is RegionKind.PLAIN
    assert m.kind("g") is RegionKind.IN_PLACE


def test_two_gib_region_stays_small() -> None:
    m = MemoryModel([RegionSpec("m", 2 << 30, "memfd")], QEMU10)
    for i in range(0, 2 << 30, 256 << 20):
        m.write("m", i, 128 << 20, i)
    m.write("m", 0, 2 << 30, 5)
    assert m.runs("m") == 3  # one run per map
    assert m.expected_content("m", 0, 2 << 30) == [(0, 2 << 30, Pattern(5))]


# -- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op", "args"),
    [
        ("write", ("nope", 0, 8, 1)),
        ("write", ("m", 4, 8, 1)),
        ("write", ("m", 0, 12, 1)),
        ("write", ("m", 0, 0, 1)),
        ("write", ("m", -8, 16, 1)),
        ("write", ("m", SIZE - 8, 16, 1)),
        ("host_write", ("m", SIZE, 8, 1)),
        ("convert", ("g", 8, K4, True, True)),
        ("convert", ("g", 0, K4 + 8, True, True)),
        ("punch_hole", ("m", 0, K4)),
        ("allocate", ("m", 0, K4)),
        ("punch_hole", ("g", 0, 8)),
        ("expected_hash", ("m", 0, SIZE + 8)),
        ("expected_content", ("nope", 0, 8)),
    ],
)
def test_bad_ranges_raise(op: str, args: tuple[Any, ...]) -> None:
    m = MemoryModel([MEMFD, RegionSpec("g", SIZE, "guest_memfd")], KVM)
    with pytest.raises(ModelRangeError) as info:
        getattr(m, op)(*args)
    assert isinstance(info.value, ScenarioError)
    assert str(info.value)


@pytest.mark.parametrize(
    "regions",
    [
        [MEMFD, MEMFD],
        [RegionSpec("m", 0, "memfd")],
        [RegionSpec("m", 4097, "memfd")],
    ],
)
def test_bad_regions_raise(regions: list[RegionSpec]) -> None:
    with pytest.raises(ModelRangeError):
        MemoryModel(regions, QEMU10)
