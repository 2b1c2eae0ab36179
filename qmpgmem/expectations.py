"""What a step must see, and the sentence that says why it did not.

Why apart from the runner: these are pure judgements of one observation against one
expectation (a hash, a hypercall's return value, a QMP reply); the runner decides which
expectation applies (the file's, the previous observation, the model's) and records results.
Each failure names the step, the range and both values, so it reads on its own in a report.
"""

from __future__ import annotations

from typing import Any, Literal

from qmpgmem import fasthash
from qmpgmem.engines.base import GuestRange
from qmpgmem.errors import QmpgmemError
from qmpgmem.report.match import subset_mismatch
from qmpgmem.scenario.model import AnyOfExpect, GuestConvert, PatternExpect, QmpCommand, Range


class StepFailed(QmpgmemError):
    """An expectation did not hold; the message names what was expected and what was seen."""

    def __init__(self, message: str, expected: str | None = None, seen: str | None = None):
        super().__init__(message)
        self.expected = expected
        self.seen = seen


def describe_range(r: Range | GuestRange) -> str:
    return f"{r.region}[{r.offset:#x}+{r.size:#x}]"


def stated_hash(expect: PatternExpect | Literal["zero"], offset: int, size: int) -> tuple[int, str]:
    """The hash a written expectation stands for, and how to say it."""
    if isinstance(expect, PatternExpect):
        return fasthash.pattern_hash(expect.pattern, offset, size), f"pattern seed {expect.pattern}"
    return fasthash.zero_hash(size), "zeros"


def check_hash(action: str, rng: GuestRange, want: int, text: str, seen: int, who: str) -> None:
    """:raise StepFailed: ``seen`` is not ``want``."""
    if seen != want:
        raise StepFailed(
            f"{action} {describe_range(rng)} (gpa {rng.gpa:#x}): expected {text}, "
            f"hash {want:#018x}; {who} saw hash {seen:#018x}",
            f"{want:#018x} ({text})",
            f"{seen:#018x}",
        )


def stated_hashes(expect: AnyOfExpect, offset: int, size: int) -> tuple[list[int], str]:
    """The hashes an ``any_of`` expectation allows, and how to say them."""
    stated = [stated_hash(e, offset, size) for e in expect.any_of]
    return [h for h, _ in stated], "any of " + ", ".join(text for _, text in stated)


def check_any_hash(
    action: str, rng: GuestRange, wants: list[int], text: str, seen: int, who: str
) -> None:
    """:raise StepFailed: ``seen`` is none of ``wants``."""
    if seen not in wants:
        hashes = ", ".join(f"{w:#018x}" for w in wants)
        raise StepFailed(
            f"{action} {describe_range(rng)} (gpa {rng.gpa:#x}): expected {text} "
            f"(hashes {hashes}); {who} saw hash {seen:#018x}",
            f"{text}",
            f"{seen:#018x}",
        )


def check_convert(step: GuestConvert, rng: GuestRange, ret: int) -> None:
    """:raise StepFailed: the hypercall's return value is not what ``step.expect`` says."""
    exp = step.expect
    if exp.outcome == "ok" and ret != 0:
        raise StepFailed(
            f"convert {describe_range(rng)} to {step.to}: expected ok (0), "
            f"the hypercall returned {ret}",
            "0",
            str(ret),
        )
    if exp.outcome == "refused" and (ret == 0 or (exp.code is not None and ret != exp.code)):
        want = "a non-zero code" if exp.code is None else str(exp.code)
        raise StepFailed(
            f"convert {describe_range(rng)} to {step.to}: expected refused ({want}), "
            f"the hypercall returned {ret}",
            want,
            str(ret),
        )


def short(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_qmp(step: QmpCommand, reply: dict[str, Any]) -> str:
    """What the reply showed, in a line; :raise StepFailed: it is not what the step expects.

    Without an expectation any successful reply passes and an error fails.
    """
    exp = step.expect
    if "error" in reply:
        err = reply["error"]
        seen = f"error {err.get('class')}: {err.get('desc')}"
        if exp is None or not exp.expects_error:
            raise StepFailed(
                f"qmp {step.command} failed: {err.get('class')}: {err.get('desc')}", None, seen
            )
        if exp.error != err.get("class"):
            raise StepFailed(
                f"qmp {step.command}: expected error class {exp.error}, got "
                f"{err.get('class')}: {err.get('desc')}",
                exp.error,
                seen,
            )
        return seen
    seen = short(reply.get("return"))
    if exp is None:
        return seen
    if exp.expects_error:
        raise StepFailed(
            f"qmp {step.command}: expected error {exp.error}, it succeeded", exp.error, seen
        )
    why = subset_mismatch(exp.return_, reply.get("return"), "return")
    if why is not None:
        raise StepFailed(f"qmp {step.command}: {why}", short(exp.return_), seen)
    return seen
