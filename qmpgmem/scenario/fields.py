"""The building blocks of the scenario language: units as pydantic types, typed errors.

Why a module of its own: the VM (model.py) and the steps (steps.py) both validate sizes,
durations and seeds and report errors the same way, so the loader can print ``FILE:LINE``
for any of them; this is the part both need.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from qmpgmem.scenario.units import (
    DURATION_PATTERN,
    SIZE_PATTERN,
    parse_duration,
    parse_size,
)

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


def _validate_size(value: Any, info: ValidationInfo) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _error(ErrorType.SIZE, f"expected a size like 4K, 2M or an integer, got {value!r}")
    what = info.field_name or "a size"  # "offset", "size"
    if isinstance(value, int) and value < 0:
        raise _error(ErrorType.SIZE, f"{what} cannot be negative, got {value}")
    try:
        size = parse_size(value)
    except ValueError as exc:
        raise _error(ErrorType.SIZE, str(exc)) from None
    if size > U64_MAX:
        raise _error(ErrorType.SIZE, f"{what} is beyond 64 bits ({size.bit_length()} bits)")
    return size


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


def _detail(
    loc: tuple[str | int, ...], kind: ErrorType, message: str, value: Any
) -> InitErrorDetails:
    return InitErrorDetails(type=_error(kind, message), loc=loc, input=value)


def _raise(title: str, errors: list[InitErrorDetails]) -> None:
    """Raise all ``errors`` at once, each at its own loc (relative to the model validated)."""
    if errors:
        raise ValidationError.from_exception_data(title, errors)
