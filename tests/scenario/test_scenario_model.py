"""The scenario models: defaults, cross-field checks, and the loc each error points at."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from qmpgmem.scenario.model import (
    STEP_ACTIONS,
    STEP_TYPES,
    ConvertExpect,
    GmemAllocate,
    GmemPunchHole,
    GuestConvert,
    GuestParallel,
    GuestSpec,
    GuestVerify,
    GuestWrite,
    HostRead,
    HostWrite,
    PatternExpect,
    QmpCommand,
    QmpExpect,
    Range,
    Region,
    Requirement,
    Scenario,
    Sleep,
    Timeouts,
    TraceExpect,
    VmCont,
    VmReset,
    VmSpec,
    VmStop,
    WaitEvent,
    parse_requirement,
)

RAM = {"id": "ram0", "size": "16M"}
GMEM = {"id": "gmem0", "size": "4M", "backend": "guest_memfd"}


def scenario(steps: list[dict[str, Any]] | None = None, **vm: Any) -> dict[str, Any]:
    """A valid scenario dict; tests change one thing in it."""
    return {
        "name": "t",
        "description": "a test",
        "vm": {"memory": [dict(RAM), dict(GMEM)], **vm},
        "steps": steps
        if steps is not None
        else [{"action": "guest.write", "range": {"region": "ram0", "size": "4K"}, "seed": 1}],
    }


def errors(data: dict[str, Any], model: Any = Scenario) -> list[tuple[str, tuple[Any, ...]]]:
    """(type, loc) of every error validating ``data``; fails if it validates."""
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return [(e["type"], tuple(e["loc"])) for e in info.value.errors()]


def only_error(data: dict[str, Any], model: Any = Scenario) -> tuple[str, tuple[Any, ...]]:
    found = errors(data, model)
    assert len(found) == 1, found
    return found[0]


# -- defaults ----------------------------------------------------------------------------------


def test_minimal_scenario_defaults() -> None:
    s = Scenario.model_validate(scenario())
    assert s.requires == [] and s.tags == [] and s.expect_trace == []
    assert s.timeouts == Timeouts(boot=30, step=30, total=300)
    assert s.vm.machine == "microvm" and s.vm.accel == "auto" and s.vm.vcpus == 1
    assert s.vm.vm_type == "default" and s.vm.qemu_args == []
    assert s.vm.guest == GuestSpec(image="microguest", boot="auto")
    ram, gmem = s.vm.memory
    assert (ram.size, ram.backend, ram.flavour, ram.share, ram.path) == (
        16 << 20,
        "memfd",
        None,
        None,
        None,
    )
    assert gmem.flavour == "auto"
    assert gmem.gmem_flags == ["mmap", "init_shared"]
    assert s.vm.region("gmem0") is gmem
    with pytest.raises(KeyError):
        s.vm.region("nope")


def test_models_are_frozen() -> None:
    s = Scenario.model_validate(scenario())
    with pytest.raises(ValidationError):
        s.name = "other"  # type: ignore[misc]


def test_timeouts_accept_units() -> None:
    t = Timeouts.model_validate({"boot": "500ms", "step": 2, "total": "1m"})
    assert (t.boot, t.step, t.total) == (0.5, 2.0, 60.0)
    assert only_error({"boot": 0}, Timeouts) == ("greater_than", ("boot",))
    assert only_error({"step": "soon"}, Timeouts) == ("qmpgmem_duration", ("step",))


def test_unknown_keys_are_rejected_everywhere() -> None:
    data = scenario()
    data["vm"]["memory"][0]["flavor"] = "auto"
    data["steps"][0]["range"]["sise"] = 8
    data["colour"] = "red"
    found = errors(data)
    assert ("extra_forbidden", ("vm", "memory", 0, "flavor")) in found
    assert ("extra_forbidden", ("steps", 0, "guest.write", "range", "sise")) in found
    assert ("extra_forbidden", ("colour",)) in found


# -- regions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("region_id", ["a", "ram0", "m-1", "x_y", "a" * 32])
def test_region_id_valid(region_id: str) -> None:
    assert Region(id=region_id, size=4096).id == region_id


@pytest.mark.parametrize("region_id", ["", "0ram", "Ram", "a" * 33, "ram.0", "qmpgmem0", "qmpgmem"])
def test_region_id_invalid(region_id: str) -> None:
    assert only_error({"id": region_id, "size": 4096}, Region) == ("qmpgmem_region_id", ("id",))


@pytest.mark.parametrize("size", [0, 4095, 4097, "6K+1", "1.5K"])
def test_region_size_must_be_pages(size: Any) -> None:
    kind, loc = only_error({"id": "r", "size": size}, Region)
    assert loc == ("size",)
    assert kind in {"qmpgmem_alignment", "qmpgmem_size"}


def test_region_flavour_only_for_guest_memfd() -> None:
    assert only_error({"id": "r", "size": "4K", "flavour": "auto"}, Region) == (
        "qmpgmem_inconsistent",
        ("flavour",),
    )
    r = Region.model_validate(
        {"id": "r", "size": "4K", "backend": "guest_memfd", "flavour": "sev-snp"}
    )
    assert r.flavour == "sev-snp"


def test_region_gmem_flags_only_for_guest_memfd() -> None:
    assert only_error({"id": "r", "size": "4K", "gmem_flags": ["mmap"]}, Region) == (
        "qmpgmem_inconsistent",
        ("gmem_flags",),
    )
    r = Region.model_validate({"id": "r", "size": "4K", "backend": "guest_memfd", "gmem_flags": []})
    assert r.gmem_flags == []
    assert only_error(
        {"id": "r", "size": "4K", "backend": "guest_memfd", "gmem_flags": ["mmap", "mmap"]}, Region
    ) == ("qmpgmem_duplicate", ("gmem_flags",))
    assert (
        only_error(
            {"id": "r", "size": "4K", "backend": "guest_memfd", "gmem_flags": ["private"]}, Region
        )[0]
        == "literal_error"
    )


def test_region_path_belongs_to_file_backend() -> None:
    assert only_error({"id": "r", "size": "4K", "path": "/tmp/x"}, Region) == (
        "qmpgmem_inconsistent",
        ("path",),
    )
    r = Region.model_validate({"id": "r", "size": "4K", "backend": "file", "path": "/dev/shm/x"})
    assert r.path == "/dev/shm/x"
    assert Region.model_validate({"id": "r", "size": "4K", "backend": "file"}).path is None


def test_region_backend_literal() -> None:
    assert only_error({"id": "r", "size": "4K", "backend": "hugetlb"}, Region) == (
        "literal_error",
        ("backend",),
    )


# -- the VM ------------------------------------------------------------------------------------


def test_vm_needs_memory() -> None:
    assert only_error({"memory": []}, VmSpec) == ("too_short", ("memory",))
    assert only_error({}, VmSpec) == ("missing", ("memory",))


def test_vm_region_ids_unique() -> None:
    data = {"memory": [RAM, {"id": "other", "size": "4K"}, RAM]}
    assert only_error(data, VmSpec) == ("qmpgmem_duplicate", ("memory", 2, "id"))


def test_vm_total_memory_bounded() -> None:
    ok = VmSpec.model_validate({"memory": [{"id": "a", "size": "1G"}, {"id": "b", "size": "1G"}]})
    assert sum(r.size for r in ok.memory) == 2 << 30
    data = {
        "memory": [{"id": "a", "size": "1G"}, {"id": "b", "size": "1G"}, {"id": "c", "size": "4K"}]
    }
    assert only_error(data, VmSpec) == ("qmpgmem_too_large", ("memory",))


@pytest.mark.parametrize(("vcpus", "ok"), [(1, True), (8, True), (0, False), (9, False)])
def test_vm_vcpus_bounds(vcpus: int, ok: bool) -> None:
    data = {"memory": [RAM], "vcpus": vcpus}
    if ok:
        assert VmSpec.model_validate(data).vcpus == vcpus
    else:
        assert only_error(data, VmSpec)[1] == ("vcpus",)


def test_vm_qemu_args_must_be_a_list() -> None:
    with pytest.raises(ValidationError, match=r"one argv word per item.*\['-d', 'int'\]"):
        VmSpec.model_validate({"memory": [RAM], "qemu_args": "-d int"})
    vm = VmSpec.model_validate({"memory": [RAM], "qemu_args": ["-d", "int"]})
    assert vm.qemu_args == ["-d", "int"]


@pytest.mark.parametrize("vm_type", ["default", "sw-protected", "sev", "sev-es", "sev-snp", "tdx"])
def test_vm_types(vm_type: str) -> None:
    assert VmSpec.model_validate({"memory": [RAM], "vm_type": vm_type}).vm_type == vm_type


def test_guest_kernel_replaces_image() -> None:
    g = GuestSpec.model_validate({"kernel": "/boot/vmlinuz", "append": "console=ttyS0"})
    assert g.image is None and g.kernel == "/boot/vmlinuz"
    g = GuestSpec.model_validate({"kernel": "k", "image": None, "boot": "pvh"})
    assert g.image is None and g.boot == "pvh"


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"kernel": "k", "image": "microguest"}, ("image",)),
        ({"kernel": "k", "boot": "rom"}, ("boot",)),
        ({"append": "quiet"}, ("append",)),
        ({"initrd": "i"}, ("initrd",)),
        ({"image": None}, ("image",)),
    ],
)
def test_guest_inconsistent(data: dict[str, Any], loc: tuple[str, ...]) -> None:
    assert only_error(data, GuestSpec) == ("qmpgmem_inconsistent", loc)


# -- ranges ------------------------------------------------------------------------------------


def test_range_defaults_and_units() -> None:
    r = Range.model_validate({"region": "ram0", "size": "4K"})
    assert (r.offset, r.size, r.end) == (0, 4096, 4096)
    r = Range.model_validate({"region": "ram0", "offset": "0x2000", "size": 8})
    assert (r.offset, r.end) == (0x2000, 0x2008)


@pytest.mark.parametrize(
    ("data", "loc"),
    [
        ({"region": "r", "size": 12}, ("size",)),
        ({"region": "r", "size": 0}, ("size",)),
        ({"region": "r", "offset": 4, "size": 8}, ("offset",)),
        ({"region": "r", "size": "big"}, ("size",)),
        ({"region": "r", "size": -8}, ("size",)),
        ({"region": "r"}, ("size",)),
    ],
)
def test_range_field_errors(data: dict[str, Any], loc: tuple[str, ...]) -> None:
    assert only_error(data, Range)[1] == loc


def _step(action: str, rng: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"action": action, "range": rng, **extra}


@pytest.mark.parametrize(
    ("rng", "field", "kind"),
    [
        ({"region": "nope", "size": 8}, "region", "qmpgmem_unknown_region"),
        ({"region": "ram0", "offset": "16M", "size": 8}, "offset", "qmpgmem_out_of_region"),
        ({"region": "ram0", "offset": "15M", "size": "2M"}, "size", "qmpgmem_out_of_region"),
        ({"region": "ram0", "size": "16M", "offset": 8}, "size", "qmpgmem_out_of_region"),
    ],
)
def test_range_must_fit_its_region(rng: dict[str, Any], field: str, kind: str) -> None:
    data = scenario([_step("host.read", rng)])
    assert only_error(data) == (kind, ("steps", 0, "range", field))


def test_range_may_end_at_region_end() -> None:
    s = Scenario.model_validate(
        scenario([_step("host.read", {"region": "ram0", "offset": "15M", "size": "1M"})])
    )
    assert s.steps[0].range.end == 16 << 20  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("action", "extra"),
    [
        ("guest.convert", {"to": "private"}),
        ("host.gmem_punch_hole", {}),
        ("host.gmem_allocate", {}),
    ],
)
def test_gmem_steps_need_whole_pages(action: str, extra: dict[str, Any]) -> None:
    ok = scenario([_step(action, {"region": "gmem0", "offset": "8K", "size": "4K"}, **extra)])
    Scenario.model_validate(ok)
    bad = scenario(
        [
            _step(action, {"region": "gmem0", "offset": 8, "size": "4K"}, **extra),
            _step(action, {"region": "gmem0", "offset": "4K", "size": 4104}, **extra),
        ]
    )
    found = errors(bad)
    assert ("qmpgmem_alignment", ("steps", 0, "range", "offset")) in found
    assert ("qmpgmem_alignment", ("steps", 1, "range", "size")) in found


def test_other_steps_take_8_byte_ranges() -> None:
    s = Scenario.model_validate(
        scenario([_step("guest.write", {"region": "ram0", "offset": 8, "size": 16}, seed=3)])
    )
    assert s.steps[0].range.offset == 8  # type: ignore[union-attr]


@pytest.mark.parametrize("action", ["host.gmem_punch_hole", "host.gmem_allocate"])
def test_host_gmem_steps_need_a_guest_memfd_region(action: str) -> None:
    data = scenario([_step(action, {"region": "ram0", "size": "4K"})])
    assert only_error(data) == ("qmpgmem_inconsistent", ("steps", 0, "range", "region"))


def test_all_range_errors_reported_together() -> None:
    data = scenario(
        [
            _step("host.read", {"region": "x", "size": 8}),
            _step("host.read", {"region": "ram0", "size": 8}),
            _step("host.read", {"region": "ram0", "offset": "16M", "size": 8}),
        ]
    )
    assert [loc for _, loc in errors(data)] == [
        ("steps", 0, "range", "region"),
        ("steps", 2, "range", "offset"),
    ]


# -- steps -------------------------------------------------------------------------------------

R = {"region": "gmem0", "size": "4K"}

STEP_CASES: list[tuple[dict[str, Any], type, dict[str, Any]]] = [
    (
        {"action": "guest.write", "range": R, "seed": 0xFFFF_FFFF_FFFF_FFFF},
        GuestWrite,
        {"seed": 2**64 - 1},
    ),
    ({"action": "guest.verify", "range": R}, GuestVerify, {"expect": None}),
    (
        {"action": "guest.verify", "range": R, "expect": {"pattern": 5}},
        GuestVerify,
        {"expect": PatternExpect(pattern=5)},
    ),
    ({"action": "guest.verify", "range": R, "expect": "zero"}, GuestVerify, {"expect": "zero"}),
    (
        {"action": "guest.convert", "range": R, "to": "private"},
        GuestConvert,
        {"to": "private", "expect": ConvertExpect(outcome="ok", code=None)},
    ),
    (
        {"action": "guest.convert", "range": R, "to": "shared", "expect": {"refused": 22}},
        GuestConvert,
        {"expect": ConvertExpect(outcome="refused", code=22)},
    ),
    ({"action": "host.read", "range": R, "expect": "unchanged"}, HostRead, {"expect": "unchanged"}),
    ({"action": "host.write", "range": R, "seed": 9}, HostWrite, {"seed": 9}),
    (
        {
            "action": "guest.parallel",
            "steps": [
                {"action": "guest.write", "range": R, "seed": 1},
                {"action": "guest.verify", "vcpu": 1, "range": R, "expect": "zero"},
            ],
        },
        GuestParallel,
        {},
    ),
    ({"action": "host.gmem_punch_hole", "range": R}, GmemPunchHole, {}),
    ({"action": "host.gmem_allocate", "range": R, "name": "fill"}, GmemAllocate, {"name": "fill"}),
    ({"action": "qmp", "command": "query-status"}, QmpCommand, {"arguments": {}, "expect": None}),
    (
        {
            "action": "qmp",
            "command": "stop",
            "arguments": {"x": [1]},
            "expect": {"error": "GenericError"},
        },
        QmpCommand,
        {"arguments": {"x": [1]}, "expect": QmpExpect(error="GenericError")},
    ),
    ({"action": "vm.stop", "timeout": "2s"}, VmStop, {"timeout": 2.0}),
    ({"action": "vm.cont"}, VmCont, {"timeout": None}),
    ({"action": "vm.reset"}, VmReset, {}),
    ({"action": "wait_event", "event": "STOP"}, WaitEvent, {"timeout": 5.0, "data": {}}),
    (
        {"action": "wait_event", "event": "RESET", "data": {"guest": False}, "timeout": "250ms"},
        WaitEvent,
        {"timeout": 0.25, "data": {"guest": False}},
    ),
    ({"action": "sleep", "seconds": "100ms"}, Sleep, {"seconds": 0.1}),
]


@pytest.mark.parametrize(("data", "cls", "fields"), STEP_CASES)
def test_every_step_kind(data: dict[str, Any], cls: type, fields: dict[str, Any]) -> None:
    s = Scenario.model_validate(scenario([data], vcpus=2))
    step = s.steps[0]
    assert type(step) is cls
    for key, value in fields.items():
        assert getattr(step, key) == value


def test_step_cases_cover_every_action() -> None:
    assert {case[0]["action"] for case in STEP_CASES} == set(STEP_ACTIONS)
    assert set(STEP_ACTIONS.values()) == set(STEP_TYPES)


def test_unknown_action_lists_the_valid_ones() -> None:
    with pytest.raises(ValidationError) as info:
        Scenario.model_validate(scenario([{"action": "guest.wrte"}]))
    (error,) = info.value.errors()
    assert error["type"] == "union_tag_invalid" and error["loc"] == ("steps", 0)
    assert error["ctx"]["tag"] == "guest.wrte"
    assert "'guest.write'" in error["ctx"]["expected_tags"]


def test_missing_action() -> None:
    assert only_error(scenario([{"range": R}])) == ("union_tag_not_found", ("steps", 0))


def test_steps_not_empty() -> None:
    assert only_error(scenario([])) == ("too_short", ("steps",))


@pytest.mark.parametrize("seed", [-1, 2**64, "1", 1.0, True])
def test_seed_is_a_u64(seed: Any) -> None:
    data = scenario(
        [{"action": "guest.write", "range": {"region": "ram0", "size": 8}, "seed": seed}]
    )
    assert only_error(data)[1] == ("steps", 0, "guest.write", "seed")


@pytest.mark.parametrize(
    ("expect", "kind", "tail"),
    [
        ("zeroo", "literal_error", ("keyword",)),
        (3, "qmpgmem_expect_form", ()),
        ({"pattern": -1}, "greater_than_equal", ("pattern-seed", "pattern")),
        ({"pattern": 1, "extra": 2}, "extra_forbidden", ("pattern-seed", "extra")),
    ],
)
def test_expect_errors(expect: Any, kind: str, tail: tuple[str, ...]) -> None:
    data = scenario(
        [{"action": "host.read", "range": {"region": "ram0", "size": 8}, "expect": expect}]
    )
    assert only_error(data) == (kind, ("steps", 0, "host.read", "expect", *tail))


@pytest.mark.parametrize(
    ("yaml_value", "outcome", "code"),
    [
        ("ok", "ok", None),
        ("refused", "refused", None),
        ({"refused": 22}, "refused", 22),
        ({"refused": None}, "refused", None),
        ({"outcome": "refused", "code": -22}, "refused", -22),
        ({}, "ok", None),
    ],
)
def test_convert_expect_spellings(yaml_value: Any, outcome: str, code: int | None) -> None:
    e = ConvertExpect.model_validate(yaml_value)
    assert (e.outcome, e.code) == (outcome, code)
    assert ConvertExpect.model_validate(e.model_dump()) == e


@pytest.mark.parametrize(
    "yaml_value",
    ["maybe", {"refused": 1, "code": 2}, {"outcome": "ok", "code": 1}, {"refused": "x"}, 5],
)
def test_convert_expect_rejects(yaml_value: Any) -> None:
    with pytest.raises(ValidationError):
        ConvertExpect.model_validate(yaml_value)


def test_qmp_expect() -> None:
    e = QmpExpect.model_validate({"return": {"status": "running"}})
    assert e.return_ == {"status": "running"} and not e.expects_error
    assert e.model_dump(by_alias=True)["return"] == {"status": "running"}
    assert QmpExpect.model_validate({"return": []}).return_ == []
    assert QmpExpect(error="GenericError").expects_error
    with pytest.raises(ValidationError, match="either return or error"):
        QmpExpect.model_validate({"return": {}, "error": "GenericError"})
    with pytest.raises(ValidationError, match="give return"):
        QmpExpect.model_validate({})


def test_trace_expect_counts() -> None:
    t = TraceExpect.model_validate({"event": "kvm_memory_fault", "max_count": 0})
    assert (t.min_count, t.max_count) == (0, 0)
    t = TraceExpect.model_validate(
        {"event": "kvm_convert_memory", "fields": {"shared_to_private": 1, "size": "0x1000"}}
    )
    assert (t.min_count, t.max_count) == (1, None)
    assert only_error({"event": "e", "min_count": 3, "max_count": 2}, TraceExpect) == (
        "qmpgmem_inconsistent",
        ("max_count",),
    )
    assert only_error({"event": "e", "min_count": -1}, TraceExpect)[1] == ("min_count",)


# -- requirements ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("kvm", Requirement("kvm")),
        ("guest_memfd_mmap", Requirement("guest_memfd_mmap")),
        ("vm_type:sev-snp", Requirement("vm_type:sev-snp")),
        ("qemu_type:sev-snp-guest", Requirement("qemu_type:sev-snp-guest")),
        ("qemu>=11.0", Requirement("qemu", ">=", (11, 0))),
        ("qemu < 10", Requirement("qemu", "<", (10,))),
        ("kernel==6.18.1", Requirement("kernel", "==", (6, 18, 1))),
    ],
)
def test_parse_requirement(text: str, expected: Requirement) -> None:
    assert parse_requirement(text) == expected
    assert parse_requirement(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "KVM", "qemu>=", "qemu>=x", "qemu=>11", "a b", ">=1"])
def test_parse_requirement_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="expected a capability"):
        parse_requirement(text)


def test_scenario_requires_points_at_the_bad_entry() -> None:
    data = scenario()
    data["requires"] = ["kvm", "qemu>=x", "guest_memfd"]
    assert only_error(data) == ("qmpgmem_requirement", ("requires", 1))
    data["requires"] = ["kvm", "qemu>=11.0"]
    assert Scenario.model_validate(data).requirements == [
        Requirement("kvm"),
        Requirement("qemu", ">=", (11, 0)),
    ]


# -- round trip --------------------------------------------------------------------------------


def test_dump_validates_again() -> None:
    data = scenario(
        [
            {"action": "guest.convert", "range": R, "to": "private", "expect": {"refused": 5}},
            {"action": "qmp", "command": "query-status", "expect": {"return": {"running": True}}},
            {"action": "qmp", "command": "x", "expect": {"error": "GenericError"}},
            {"action": "host.read", "range": R, "expect": {"pattern": 4}},
            {"action": "wait_event", "event": "STOP"},
        ]
    )
    data["expect_trace"] = [{"event": "kvm_memory_fault", "max_count": 0}]
    s = Scenario.model_validate(copy.deepcopy(data))
    again = Scenario.model_validate(s.model_dump(mode="json", by_alias=True))
    assert again == s
