"""Ranges, expectations and steps of a scenario: what a scenario asks the guest and the host to do.

Why apart from the VM and the scenario (model.py): the steps are most of the language and grow
with it; each step class checks its own fields here, while checks that need the VM (a range
inside its region, a vcpu below vm.vcpus) stay on :class:`~qmpgmem.scenario.model.Scenario`.
``check_parallel`` and ``racing_pairs`` are the rules of guest.parallel that need only the
step itself; the memory model uses ``racing_pairs`` too (R22).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from pydantic import (
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from qmpgmem.scenario.fields import (
    MAX_VCPUS,
    RANGE_ALIGN,
    Duration,
    ErrorType,
    Seed,
    Size,
    StrictModel,
    _detail,
    _error,
)

# -- ranges and expectations -------------------------------------------------------------------


class Range(StrictModel):
    """Bytes of one region: ``offset`` from its start, ``size`` long."""

    region: str
    offset: Size = 0
    size: Size

    @field_validator("offset", "size")
    @classmethod
    def _check_align(cls, value: int, info: Any) -> int:
        if value % RANGE_ALIGN:
            raise _error(
                ErrorType.ALIGNMENT,
                f"{info.field_name} must be a multiple of 8 bytes, got {value}",
            )
        return value

    @field_validator("size")
    @classmethod
    def _check_nonempty(cls, value: int) -> int:
        if value == 0:
            raise _error(ErrorType.ALIGNMENT, "size must be greater than 0")
        return value

    @property
    def end(self) -> int:
        """Offset one past the last byte."""
        return self.offset + self.size


class PatternExpect(StrictModel):
    """The bytes must equal the pattern the tool derives from ``pattern`` (a seed)."""

    pattern: Seed


class AnyOfExpect(StrictModel):
    """Any one of these contents: for a read that races with a write or a conversion, where
    the model can only name the outcomes that are possible, not the one that happens."""

    any_of: list[
        Annotated[
            PatternExpect | Literal["zero"],
            Field(union_mode="left_to_right"),
        ]
    ] = Field(min_length=1)


EXPECT_TAGS: Final = ("pattern-seed", "keyword", "any-of")


def _expect_tag(value: Any) -> str | None:
    if isinstance(value, AnyOfExpect) or (isinstance(value, dict) and "any_of" in value):
        return "any-of"
    if isinstance(value, dict | PatternExpect):
        return "pattern-seed"
    if isinstance(value, str):
        return "keyword"
    return None


#: What a range must contain: a seeded pattern, zeros, or what it held before the step.
Expect = Annotated[
    Annotated[PatternExpect, Tag("pattern-seed")]
    | Annotated[Literal["zero", "unchanged"], Tag("keyword")]
    | Annotated[AnyOfExpect, Tag("any-of")],
    Discriminator(
        _expect_tag,
        custom_error_type=str(ErrorType.EXPECT_FORM),
        custom_error_message=(
            "expected 'zero', 'unchanged', {pattern: <seed>} or {any_of: [<expectation>, ...]}"
        ),
    ),
]


class ConvertExpect(StrictModel):
    """How a conversion must end: ``ok``, or ``refused`` with a hypercall code (None: any)."""

    outcome: Literal["ok", "refused"] = "ok"
    code: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_yaml(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value in ("ok", "refused"):
                return {"outcome": value}
            raise _error(
                ErrorType.EXPECT_FORM,
                f"expected ok, refused or {{refused: <code>}}, got {value!r}",
            )
        if isinstance(value, dict) and "refused" in value:
            if len(value) != 1:
                raise _error(
                    ErrorType.EXPECT_FORM,
                    "{refused: <code>} takes no other keys, got "
                    + ", ".join(repr(k) for k in value),
                )
            return {"outcome": "refused", "code": value["refused"]}
        return value

    @model_validator(mode="after")
    def _code_only_refused(self) -> ConvertExpect:
        if self.outcome == "ok" and self.code is not None:
            raise _error(ErrorType.INCONSISTENT, "a code is only for outcome refused")
        return self


_CONVERT_EXPECT_SCHEMA: Final[dict[str, Any]] = {
    "anyOf": [
        {"type": "string", "enum": ["ok", "refused"]},
        {
            "type": "object",
            "properties": {"refused": {"anyOf": [{"type": "integer"}, {"type": "null"}]}},
            "required": ["refused"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "outcome": {"type": "string", "enum": ["ok", "refused"]},
                "code": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            },
            "additionalProperties": False,
        },
    ],
    "description": "ok, refused, {refused: <code or null>}",
}


class QmpExpect(StrictModel):
    """What a QMP command must answer: a ``return`` that contains the given subset, or an error."""

    model_config = ConfigDict(populate_by_name=True)

    #: A subset the command's return value must match (YAML key ``return``).
    return_: Any = Field(default=None, alias="return")
    #: The QMP error class the command must fail with (e.g. GenericError).
    error: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> QmpExpect:
        has_return = "return_" in self.model_fields_set
        if self.return_ is not None and self.error is not None:
            raise _error(ErrorType.INCONSISTENT, "give either return or error, not both")
        if not has_return and self.error is None:
            raise _error(ErrorType.INCONSISTENT, "give return (a subset to match) or error")
        return self

    @property
    def expects_error(self) -> bool:
        """True when the command must fail."""
        return self.error is not None


# -- steps -------------------------------------------------------------------------------------


#: A step's own bound: more than 0 (0 would mean "no time at all", not "the default").
StepTimeout = Annotated[Duration, Field(gt=0)]


class _StepBase(StrictModel):
    #: Shown in reports instead of the action.
    name: str | None = None
    #: Overrides timeouts.step for this step.
    timeout: StepTimeout | None = None


class _RangeStep(_StepBase):
    range: Range


class _GuestStep(_RangeStep):
    #: The vCPU that runs the step (0 is the BSP); below vm.vcpus.
    vcpu: int = Field(0, ge=0, le=MAX_VCPUS - 1, strict=True)


class GuestWrite(_GuestStep):
    """The guest fills the range with the pattern of ``seed``."""

    action: Literal["guest.write"]
    seed: Seed


class GuestVerify(_GuestStep):
    """The guest hashes the range; it must match ``expect`` (None: what the model predicts)."""

    action: Literal["guest.verify"]
    expect: Expect | None = None


class GuestConvert(_GuestStep):
    """The guest asks KVM to make the range shared or private (KVM_HC_MAP_GPA_RANGE)."""

    action: Literal["guest.convert"]
    to: Literal["shared", "private"]
    expect: Annotated[ConvertExpect, WithJsonSchema(_CONVERT_EXPECT_SCHEMA)] = Field(
        default_factory=ConvertExpect
    )


#: What guest.parallel may run: the guest steps, each on its own vCPU.
ParallelStep = Annotated[GuestWrite | GuestVerify | GuestConvert, Field(discriminator="action")]


class GuestParallel(_StepBase):
    """Guest steps started at the same time, each on the vCPU it names; done when all are.

    The BSP arms every sub-step, then releases them together (protocol ARM/GO). Ranges that
    overlap with a writing or converting sibling have no single outcome: a verify there needs
    an explicit ``expect`` (e.g. ``any_of``), and the model treats written overlap as unknown.
    """

    action: Literal["guest.parallel"]
    steps: list[ParallelStep] = Field(min_length=2, max_length=MAX_VCPUS)


class HostRead(_RangeStep):
    """The host reads the range through its mapping; it must match ``expect``."""

    action: Literal["host.read"]
    expect: Expect | None = None


class HostWrite(_RangeStep):
    """The host fills the range with the pattern of ``seed``."""

    action: Literal["host.write"]
    seed: Seed


class GmemPunchHole(_RangeStep):
    """The host punches a hole in the region's guest_memfd (fallocate PUNCH_HOLE)."""

    action: Literal["host.gmem_punch_hole"]


class GmemAllocate(_RangeStep):
    """The host allocates the range in the region's guest_memfd (fallocate mode 0)."""

    action: Literal["host.gmem_allocate"]


class QmpCommand(_StepBase):
    """Send one QMP command; check its answer if ``expect`` is given, else it must succeed."""

    action: Literal["qmp"]
    command: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    expect: QmpExpect | None = None


class VmStop(_StepBase):
    """Pause the vCPUs (QMP stop)."""

    action: Literal["vm.stop"]


class VmCont(_StepBase):
    """Resume the vCPUs (QMP cont)."""

    action: Literal["vm.cont"]


class VmReset(_StepBase):
    """Reset the VM (QMP system_reset) and wait for the guest to say hello again."""

    action: Literal["vm.reset"]


class WaitEvent(_StepBase):
    """Wait for a QMP event whose data contains ``data``."""

    action: Literal["wait_event"]
    event: str = Field(min_length=1)
    data: dict[str, Any] = Field(default_factory=dict)
    timeout: StepTimeout = 5.0


class Sleep(_StepBase):
    """Do nothing for a while (let an asynchronous effect happen)."""

    action: Literal["sleep"]
    seconds: Duration


#: Every step class, in the order the documentation lists them.
STEP_TYPES: Final = (
    GuestWrite,
    GuestVerify,
    GuestConvert,
    GuestParallel,
    HostRead,
    HostWrite,
    GmemPunchHole,
    GmemAllocate,
    QmpCommand,
    VmStop,
    VmCont,
    VmReset,
    WaitEvent,
    Sleep,
)
#: action name -> step class
STEP_ACTIONS: Final[dict[str, type[_StepBase]]] = {
    cls.model_fields["action"].annotation.__args__[0]: cls  # type: ignore[union-attr]
    for cls in STEP_TYPES
}

Step = Annotated[
    GuestWrite
    | GuestVerify
    | GuestConvert
    | GuestParallel
    | HostRead
    | HostWrite
    | GmemPunchHole
    | GmemAllocate
    | QmpCommand
    | VmStop
    | VmCont
    | VmReset
    | WaitEvent
    | Sleep,
    Field(discriminator="action"),
]

#: Steps that act on a guest_memfd; their ranges must be whole pages.
_PAGE_ALIGNED_STEPS: Final = (GuestConvert, GmemPunchHole, GmemAllocate)
#: Steps that only make sense on a guest_memfd region.
_GMEM_ONLY_STEPS: Final = (GmemPunchHole, GmemAllocate)


def check_parallel(
    step: GuestParallel, at: tuple[str | int, ...], vcpus: int
) -> list[InitErrorDetails]:
    """One vCPU per sub-step; a verify racing a sibling that changes the same bytes must say
    what it accepts (the model has no single prediction there)."""
    errors: list[InitErrorDetails] = []
    seen: dict[int, int] = {}
    for sub, substep in enumerate(step.steps):
        if substep.vcpu in seen:
            errors.append(
                _detail(
                    (*at, "steps", sub, "vcpu"),
                    ErrorType.DUPLICATE,
                    f"vcpu {substep.vcpu} already runs steps[{seen[substep.vcpu]}] of this "
                    "guest.parallel; each sub-step needs its own vCPU",
                    substep.vcpu,
                )
            )
        seen.setdefault(substep.vcpu, sub)
    for sub, other, _lo, _hi in racing_pairs(step.steps):
        a, b = step.steps[sub], step.steps[other]
        if isinstance(a, GuestConvert) and isinstance(b, GuestConvert) and a.to != b.to:
            errors.append(
                _detail(
                    (*at, "steps", other, "to"),
                    ErrorType.INCONSISTENT,
                    f"this conversion to {b.to} races with steps[{sub}] converting the same "
                    f"pages to {a.to}; which one wins is undetermined",
                    b.to,
                )
            )
        for i in (sub, other):
            substep = step.steps[i]
            if isinstance(substep, GuestVerify) and substep.expect in (None, "unchanged"):
                errors.append(
                    _detail(
                        (*at, "steps", i, "expect"),
                        ErrorType.INCONSISTENT,
                        f"this verify races with steps[{other if i == sub else sub}] of the "
                        "same guest.parallel over the same bytes; its outcome is undetermined, "
                        "so state what it may see (e.g. expect: {any_of: [zero, {pattern: 1}]})",
                        substep.expect,
                    )
                )
    return errors


def racing_pairs(steps: list[Any]) -> list[tuple[int, int, int, int]]:
    """(i, j, lo, hi): sub-steps i < j whose ranges share bytes [lo, hi) of one region while
    at least one of them changes memory (a write or a conversion)."""
    pairs = []
    for i, a in enumerate(steps):
        for j in range(i + 1, len(steps)):
            b = steps[j]
            if isinstance(a, GuestVerify) and isinstance(b, GuestVerify):
                continue
            if a.range.region != b.range.region:
                continue
            lo, hi = max(a.range.offset, b.range.offset), min(a.range.end, b.range.end)
            if lo < hi:
                pairs.append((i, j, lo, hi))
    return pairs
