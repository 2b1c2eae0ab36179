"""The scenario language: pydantic models every other part of qmpgmem codes against.

Why pydantic with ``extra="forbid"`` everywhere: a scenario is a test; a misspelt key that is
silently ignored turns a test into one that cannot fail. Each check that needs more than one
field (a range inside its region, a flavour only for guest_memfd) lives on the model that owns
both fields, and raises a typed error (:class:`ErrorType`) whose ``loc`` points at the field the
user has to change, so the loader can print the YAML line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, TypeAlias

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from qmpgmem.scenario.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    format_size,
    parse_duration,
    parse_size,
)

__all__ = [
    "EXPECT_TAGS",
    "MAX_MEMORY",
    "MAX_VCPUS",
    "PAGE_SIZE",
    "REQUIREMENT_CHECK",
    "STEP_ACTIONS",
    "STEP_TYPES",
    "AnyOfExpect",
    "ConvertExpect",
    "Duration",
    "ErrorType",
    "Expect",
    "GmemAllocate",
    "GmemPunchHole",
    "GuestConvert",
    "GuestParallel",
    "GuestSpec",
    "GuestVerify",
    "GuestWrite",
    "HostRead",
    "HostWrite",
    "PatternExpect",
    "QmpCommand",
    "QmpExpect",
    "Range",
    "Region",
    "Requirement",
    "Scenario",
    "Size",
    "Sleep",
    "Step",
    "StrictModel",
    "Timeouts",
    "TraceExpect",
    "VmCont",
    "VmReset",
    "VmSpec",
    "VmStop",
    "WaitEvent",
    "parse_requirement",
]

PAGE_SIZE: Final = 4096
#: Total guest memory a scenario may ask for; the micro guest needs far less.
MAX_MEMORY: Final = 2 << 30
RANGE_ALIGN: Final = 8
#: vCPUs a VM may have (the micro guest's per-vCPU tables are sized for this many).
MAX_VCPUS: Final = 8
U64_MAX: Final = 2**64 - 1


class ErrorType(StrEnum):
    """Error types of our own; the loader keys its messages on these, never on English text."""

    SIZE = "qmpgmem_size"
    DURATION = "qmpgmem_duration"
    ALIGNMENT = "qmpgmem_alignment"
    REGION_ID = "qmpgmem_region_id"
    INCONSISTENT = "qmpgmem_inconsistent"
    DUPLICATE = "qmpgmem_duplicate"
    TOO_LARGE = "qmpgmem_too_large"
    SHELL_STRING = "qmpgmem_shell_string"
    UNKNOWN_REGION = "qmpgmem_unknown_region"
    OUT_OF_REGION = "qmpgmem_out_of_region"
    REQUIREMENT = "qmpgmem_requirement"
    EXPECT_FORM = "qmpgmem_expect_form"


def _error(kind: ErrorType, message: str, **ctx: Any) -> PydanticCustomError:
    """A typed error whose text is ``message`` (kept in ctx so braces in input are harmless)."""
    return PydanticCustomError(str(kind), "{message}", {"message": message, **ctx})


# -- units as pydantic types -----------------------------------------------------------------


def _validate_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _error(ErrorType.SIZE, f"expected a size like 4K, 2M or an integer, got {value!r}")
    try:
        return parse_size(value)
    except ValueError as exc:
        raise _error(ErrorType.SIZE, str(exc)) from None


def _validate_duration(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _error(
            ErrorType.DURATION,
            f"expected a duration like 500ms, 2s, 1m or a number of seconds, got {value!r}",
        )
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise _error(ErrorType.DURATION, str(exc)) from None


#: Bytes; YAML may say 4096, "4K", "64M", "2GiB" or "0x1000".
Size = Annotated[
    int,
    BeforeValidator(_validate_size),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": SIZE_PATTERN},
            ],
            "description": "bytes: an integer, hex (0x1000) or a number with K/M/G/T (binary)",
        }
    ),
]

#: Seconds; YAML may say 2, 0.5, "500ms", "2s" or "1m".
Duration = Annotated[
    float,
    BeforeValidator(_validate_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": DURATION_PATTERN},
            ],
            "description": "seconds: a number or a string with us/ms/s/m/h",
        }
    ),
]

Seed = Annotated[int, Field(ge=0, le=U64_MAX, strict=True)]


class StrictModel(BaseModel):
    """Base of every scenario model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# -- the VM ------------------------------------------------------------------------------------

_REGION_ID = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

Backend: TypeAlias = Literal["ram", "memfd", "file", "guest_memfd"]
Flavour: TypeAlias = Literal["auto", "sev-snp", "tdx", "memfd-private", "guest-memfd-property"]
GmemFlag: TypeAlias = Literal["mmap", "init_shared"]


def _default_gmem_flags() -> list[GmemFlag]:
    return ["mmap", "init_shared"]


class Region(StrictModel):
    """One guest RAM region; ``id`` names it in ranges and becomes the QEMU backend id."""

    id: str
    size: Size
    backend: Backend = "memfd"
    #: How QEMU gets guest_memfd memory; only for backend guest_memfd, where it defaults to auto.
    flavour: Flavour | None = None
    share: bool | None = None
    #: Backing file; only for backend file (None: a file in the run's private directory).
    path: str | None = None
    #: KVM_CREATE_GUEST_MEMFD flags for the direct KVM engine; only for backend guest_memfd.
    gmem_flags: list[GmemFlag] = Field(default_factory=_default_gmem_flags)

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _REGION_ID.fullmatch(value):
            raise _error(
                ErrorType.REGION_ID,
                f"a region id is a lower-case letter then up to 31 of [a-z0-9_-], got {value!r}",
            )
        if value.startswith("qmpgmem"):
            raise _error(
                ErrorType.REGION_ID,
                f"region ids starting with 'qmpgmem' are reserved for the tool, got {value!r}",
            )
        return value

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: int) -> int:
        if value <= 0 or value % PAGE_SIZE:
            raise _error(
                ErrorType.ALIGNMENT,
                f"a region size must be a positive multiple of 4K, got {value} "
                f"({format_size(value)})",
            )
        return value

    @field_validator("gmem_flags")
    @classmethod
    def _check_flags(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise _error(ErrorType.DUPLICATE, f"gmem_flags lists a flag twice: {value}")
        return value

    @model_validator(mode="after")
    def _check_backend(self) -> Region:
        errors: list[InitErrorDetails] = []
        gmem = self.backend == "guest_memfd"
        if self.flavour is not None and not gmem:
            errors.append(
                _detail(
                    ("flavour",),
                    ErrorType.INCONSISTENT,
                    f"flavour is only for backend guest_memfd, this region is {self.backend}",
                    self.flavour,
                )
            )
        # The default is tolerated everywhere, so a dumped scenario validates again.
        if self.gmem_flags != _default_gmem_flags() and not gmem:
            errors.append(
                _detail(
                    ("gmem_flags",),
                    ErrorType.INCONSISTENT,
                    f"gmem_flags is only for backend guest_memfd, this region is {self.backend}",
                    self.gmem_flags,
                )
            )
        if self.path is not None and self.backend != "file":
            errors.append(
                _detail(
                    ("path",),
                    ErrorType.INCONSISTENT,
                    f"path is only for backend file, this region is {self.backend}",
                    self.path,
                )
            )
        _raise(type(self).__name__, errors)
        if gmem and self.flavour is None:
            object.__setattr__(self, "flavour", "auto")  # frozen: fill the default in place
        return self


class GuestSpec(StrictModel):
    """What the VM boots: the built-in micro guest, a kernel of the user's, or nothing.

    ``image: none`` keeps the VM paused before its first instruction: only QMP and host
    steps then, e.g. to check how QEMU set up a confidential VM's memory on a host whose
    guest could not boot the micro guest.
    """

    image: Literal["microguest", "none"] | None = "microguest"
    boot: Literal["auto", "rom", "pvh"] = "auto"
    kernel: str | None = None
    initrd: str | None = None
    append: str | None = None

    @model_validator(mode="after")
    def _check_consistent(self) -> GuestSpec:
        errors: list[InitErrorDetails] = []
        if self.kernel is not None:
            if "image" in self.model_fields_set and self.image is not None:
                errors.append(
                    _detail(
                        ("image",),
                        ErrorType.INCONSISTENT,
                        "give either image or kernel, not both (a kernel replaces the image)",
                        self.image,
                    )
                )
            if self.boot == "rom":
                errors.append(
                    _detail(
                        ("boot",),
                        ErrorType.INCONSISTENT,
                        "boot rom runs the micro guest image; a kernel boots with auto or pvh",
                        self.boot,
                    )
                )
        else:
            for key in ("initrd", "append"):
                if getattr(self, key) is not None:
                    errors.append(
                        _detail(
                            (key,),
                            ErrorType.INCONSISTENT,
                            f"{key} needs a kernel",
                            getattr(self, key),
                        )
                    )
            if self.image is None:
                errors.append(
                    _detail(
                        ("image",),
                        ErrorType.INCONSISTENT,
                        "nothing to boot: give image microguest or a kernel",
                        self.image,
                    )
                )
        _raise(type(self).__name__, errors)
        if self.kernel is not None and self.image is not None:
            object.__setattr__(self, "image", None)  # frozen: a kernel replaces the image
        return self


class VmSpec(StrictModel):
    """The virtual machine a scenario runs on."""

    machine: Literal["microvm", "q35", "pc"] = "microvm"
    accel: Literal["kvm", "tcg", "auto"] = "auto"
    #: vCPUs of the VM (QEMU -smp, or vCPUs of the direct KVM VM); the micro guest brings
    #: them all up and guest steps name the one that runs them (``vcpu``).
    vcpus: int = Field(1, ge=1, le=MAX_VCPUS)
    #: KVM VM type, used by the direct KVM engine.
    vm_type: Literal["default", "sw-protected", "sev", "sev-es", "sev-snp", "tdx"] = "default"
    memory: list[Region] = Field(min_length=1)
    #: Extra QEMU arguments, one list item per argv word.
    qemu_args: list[str] = Field(default_factory=list)
    guest: GuestSpec = Field(default_factory=GuestSpec)

    @field_validator("qemu_args", mode="before")
    @classmethod
    def _no_shell_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise _error(
                ErrorType.SHELL_STRING,
                "qemu_args is a list with one argv word per item (no shell splitting), "
                f"e.g. {value.split()!r}",
            )
        return value

    @model_validator(mode="after")
    def _check_memory(self) -> VmSpec:
        errors: list[InitErrorDetails] = []
        seen: dict[str, int] = {}
        for index, region in enumerate(self.memory):
            if region.id in seen:
                errors.append(
                    _detail(
                        ("memory", index, "id"),
                        ErrorType.DUPLICATE,
                        f"region id {region.id!r} is already used by memory[{seen[region.id]}]",
                        region.id,
                    )
                )
            seen.setdefault(region.id, index)
        total = sum(region.size for region in self.memory)
        if total > MAX_MEMORY:
            errors.append(
                _detail(
                    ("memory",),
                    ErrorType.TOO_LARGE,
                    f"the regions add up to {format_size(total)}, more than the "
                    f"{format_size(MAX_MEMORY)} a scenario may use",
                    total,
                )
            )
        _raise(type(self).__name__, errors)
        return self

    def region(self, region_id: str) -> Region:
        """The region called ``region_id``; KeyError if there is none."""
        for region in self.memory:
            if region.id == region_id:
                return region
        raise KeyError(region_id)


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


class _StepBase(StrictModel):
    #: Shown in reports instead of the action.
    name: str | None = None
    #: Overrides timeouts.step for this step.
    timeout: Duration | None = None


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
    timeout: Duration = 5.0


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


# -- the scenario ------------------------------------------------------------------------------


class Timeouts(StrictModel):
    """Bounds on a run, in seconds."""

    boot: Duration = Field(30.0, gt=0)
    step: Duration = Field(30.0, gt=0)
    total: Duration = Field(300.0, gt=0)


class TraceExpect(StrictModel):
    """A trace event the run must (or, with max_count 0, must not) produce."""

    event: str = Field(min_length=1)
    fields: dict[str, str | int] = Field(default_factory=dict)
    min_count: int = Field(1, ge=0)
    max_count: int | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check_counts(self) -> TraceExpect:
        if self.max_count is None:
            return self
        if "min_count" not in self.model_fields_set and self.max_count < self.min_count:
            return self.model_copy(update={"min_count": self.max_count})
        if self.min_count > self.max_count:
            _raise(
                type(self).__name__,
                [
                    _detail(
                        ("max_count",),
                        ErrorType.INCONSISTENT,
                        f"max_count {self.max_count} is below min_count {self.min_count}",
                        self.max_count,
                    )
                ],
            )
        return self


_REQUIREMENT = re.compile(
    r"^(?P<name>[a-z][a-z0-9_:.-]*)"
    r"(?:\s*(?P<op>>=|<=|==|!=|>|<)\s*(?P<version>[0-9]+(?:\.[0-9]+)*))?$"
)


@dataclass(frozen=True)
class Requirement:
    """A parsed ``requires`` entry: a capability name, optionally compared with a version."""

    name: str
    op: str | None = None
    version: tuple[int, ...] | None = None

    def __str__(self) -> str:
        if self.op is None or self.version is None:
            return self.name
        return f"{self.name}{self.op}{'.'.join(map(str, self.version))}"


def parse_requirement(text: str) -> Requirement:
    """Parse "kvm", "vm_type:sev-snp" or "qemu>=11.0".

    :raise ValueError: the text is not a requirement.
    """
    match = _REQUIREMENT.fullmatch(text.strip())
    if match is None:
        raise ValueError(
            "expected a capability like 'guest_memfd' or 'vm_type:sev-snp', optionally "
            f"compared with a version like 'qemu>=11.0', got {text!r}"
        )
    version = match["version"]
    return Requirement(
        name=match["name"],
        op=match["op"],
        version=tuple(int(part) for part in version.split(".")) if version else None,
    )


#: Validation-context key of a requirement-name checker (see Scenario._check_requires).
REQUIREMENT_CHECK: Final = "requirement_check"


class Scenario(StrictModel):
    """A VM, the steps to run on it, and what must be seen."""

    name: str = Field(min_length=1)
    description: str
    #: Host capabilities the scenario needs; a host without them skips it.
    requires: list[str] = Field(default_factory=list)
    vm: VmSpec
    steps: list[Step] = Field(min_length=1)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    expect_trace: list[TraceExpect] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)

    @field_validator("requires")
    @classmethod
    def _check_requires(cls, value: list[str], info: ValidationInfo) -> list[str]:
        """Syntax always; names too when the caller passes a checker in the context.

        Why a context entry: the names a host can be asked about live with the host probe,
        and this package imports nothing of ours (``REQUIREMENT_CHECK`` in the context is a
        function returning None or what is wrong with one requirement).
        """
        check = (info.context or {}).get(REQUIREMENT_CHECK)
        errors = []
        for index, text in enumerate(value):
            try:
                parse_requirement(text)
            except ValueError as exc:
                errors.append(_detail((index,), ErrorType.REQUIREMENT, str(exc), text))
                continue
            why = check(text) if check is not None else None
            if why:
                errors.append(_detail((index,), ErrorType.REQUIREMENT, why, text))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return value

    @model_validator(mode="after")
    def _check_ranges(self) -> Scenario:
        errors: list[InitErrorDetails] = []
        regions = {region.id: region for region in self.vm.memory}
        no_guest = self.vm.guest.image == "none"
        for index, step in enumerate(self.steps):
            if no_guest and isinstance(
                step, GuestWrite | GuestVerify | GuestConvert | GuestParallel | VmReset
            ):
                errors.append(
                    _detail(
                        ("steps", index, "action"),
                        ErrorType.INCONSISTENT,
                        f"{step.action} needs a guest; vm.guest.image is none",
                        step.action,
                    )
                )
            if isinstance(step, GuestParallel):
                errors += check_parallel(step, ("steps", index), self.vm.vcpus)
                for sub, substep in enumerate(step.steps):
                    self._check_step(substep, ("steps", index, "steps", sub), regions, errors)
            else:
                self._check_step(step, ("steps", index), regions, errors)
        _raise(type(self).__name__, errors)
        return self

    def _check_step(
        self,
        step: Step,
        at: tuple[str | int, ...],
        regions: dict[str, Region],
        errors: list[InitErrorDetails],
    ) -> None:
        """The checks of one step at ``at``: its vCPU, its range against its region."""
        if isinstance(step, _GuestStep) and step.vcpu >= self.vm.vcpus:
            errors.append(
                _detail(
                    (*at, "vcpu"),
                    ErrorType.INCONSISTENT,
                    f"vcpu {step.vcpu} does not exist: the VM has vm.vcpus {self.vm.vcpus} "
                    f"(vCPUs 0..{self.vm.vcpus - 1})",
                    step.vcpu,
                )
            )
        if isinstance(step, _RangeStep):
            self._check_range(step, (*at, "range"), regions, errors)

    @staticmethod
    def _check_range(
        step: _RangeStep,
        loc: tuple[str | int, ...],
        regions: dict[str, Region],
        errors: list[InitErrorDetails],
    ) -> None:
        rng = step.range
        region = regions.get(rng.region)
        if region is None:
            errors.append(
                _detail(
                    (*loc, "region"),
                    ErrorType.UNKNOWN_REGION,
                    f"no region {rng.region!r}; vm.memory has "
                    + ", ".join(repr(r) for r in regions),
                    rng.region,
                )
            )
            return
        if isinstance(step, _PAGE_ALIGNED_STEPS):
            for field in ("offset", "size"):
                value = getattr(rng, field)
                if value % PAGE_SIZE:
                    errors.append(
                        _detail(
                            (*loc, field),
                            ErrorType.ALIGNMENT,
                            f"{step.action} works on whole pages: {field} must be a "
                            f"multiple of 4K, got {value}",
                            value,
                        )
                    )
        if isinstance(step, _GMEM_ONLY_STEPS) and region.backend != "guest_memfd":
            errors.append(
                _detail(
                    (*loc, "region"),
                    ErrorType.INCONSISTENT,
                    f"{step.action} needs a guest_memfd region; {region.id!r} is "
                    f"backend {region.backend}",
                    rng.region,
                )
            )
        if rng.offset >= region.size:
            errors.append(
                _detail(
                    (*loc, "offset"),
                    ErrorType.OUT_OF_REGION,
                    f"offset {format_size(rng.offset)} is past the end of region "
                    f"{region.id!r} ({format_size(region.size)})",
                    rng.offset,
                )
            )
        elif rng.end > region.size:
            errors.append(
                _detail(
                    (*loc, "size"),
                    ErrorType.OUT_OF_REGION,
                    f"the range ends at {format_size(rng.end)}, past the end of region "
                    f"{region.id!r} ({format_size(region.size)}); at most "
                    f"{format_size(region.size - rng.offset)} fits at this offset",
                    rng.size,
                )
            )

    @property
    def requirements(self) -> list[Requirement]:
        """``requires`` parsed."""
        return [parse_requirement(text) for text in self.requires]


# -- helpers -----------------------------------------------------------------------------------


def _detail(
    loc: tuple[str | int, ...], kind: ErrorType, message: str, value: Any
) -> InitErrorDetails:
    return InitErrorDetails(type=_error(kind, message), loc=loc, input=value)


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


def _raise(title: str, errors: list[InitErrorDetails]) -> None:
    """Raise all ``errors`` at once, each at its own loc (relative to the model validated)."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)
