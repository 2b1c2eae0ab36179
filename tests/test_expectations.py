"""Judgements of one observation against one expectation, and their sentences."""

from __future__ import annotations

from typing import Any

import pytest

from qmpgmem.engines.base import GuestRange
from qmpgmem.expectations import StepFailed, check_convert, check_hash, check_qmp, stated_hash
from qmpgmem.guest import protocol
from qmpgmem.scenario.model import STEP_ACTIONS, PatternExpect

RNG = GuestRange(region="m0", offset=0x1000, size=0x2000, gpa=0x401000)


def step(action: str, **kw: Any) -> Any:
    return STEP_ACTIONS[action].model_validate({"action": action, **kw})


def test_stated_hashes() -> None:
    assert stated_hash(PatternExpect(pattern=3), 0x1000, 0x2000) == (
        protocol.pattern_hash(3, 0x1000, 0x2000),
        "pattern seed 3",
    )
    assert stated_hash("zero", 0, 4096) == (protocol.zero_hash(4096), "zeros")


def test_hash_mismatch_names_step_range_gpa_and_both_hashes() -> None:
    check_hash("guest.verify", RNG, 5, "zeros", 5, "the guest")
    with pytest.raises(StepFailed) as info:
        check_hash("guest.verify", RNG, 0xA, "pattern seed 1", 0xB, "the guest")
    text = str(info.value)
    assert "guest.verify m0[0x1000+0x2000] (gpa 0x401000)" in text
    assert "expected pattern seed 1, hash 0x000000000000000a" in text
    assert "the guest saw hash 0x000000000000000b" in text


CONVERT = {"range": {"region": "m0", "size": 4096}, "to": "private"}


@pytest.mark.parametrize(
    ("expect", "ret", "fails"),
    [
        ("ok", 0, False),
        ("ok", -1000, True),
        ("refused", -1000, False),
        ("refused", 0, True),
        ({"refused": -1000}, -1000, False),
        ({"refused": -1000}, -22, True),
    ],
)
def test_convert_outcomes(expect: Any, ret: int, fails: bool) -> None:
    s = step("guest.convert", **CONVERT, expect=expect)
    if fails:
        with pytest.raises(StepFailed, match=f"the hypercall returned {ret}"):
            check_convert(s, RNG, ret)
    else:
        check_convert(s, RNG, ret)


ERR = {"error": {"class": "GenericError", "desc": "nope"}}


@pytest.mark.parametrize(
    ("expect", "reply", "fails"),
    [
        (None, {"return": {}}, False),
        (None, ERR, True),
        ({"error": "GenericError"}, ERR, False),
        ({"error": "CommandNotFound"}, ERR, True),
        ({"error": "GenericError"}, {"return": {}}, True),
        (
            {"return": {"status": "paused"}},
            {"return": {"status": "paused", "running": False}},
            False,
        ),
        ({"return": {"status": "paused"}}, {"return": {"status": "running"}}, True),
    ],
)
def test_qmp_replies(expect: Any, reply: dict[str, Any], fails: bool) -> None:
    kw = {"expect": expect} if expect is not None else {}
    s = step("qmp", command="query-status", **kw)
    if fails:
        with pytest.raises(StepFailed, match="qmp query-status"):
            check_qmp(s, reply)
    else:
        assert check_qmp(s, reply)
