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
from typing import Any, Final, Literal, TypeAlias

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from qmpgmem.scenario.fields import (
    MAX_MEMORY,
    MAX_VCPUS,
    PAGE_SIZE,
    Duration,
    ErrorType,
    Size,
    StrictModel,
    _detail,
    _error,
    _raise,
)
from qmpgmem.scenario.steps import (
    _GMEM_ONLY_STEPS,
    _PAGE_ALIGNED_STEPS,
    EXPECT_TAGS,
    STEP_ACTIONS,
    STEP_TYPES,
    AnyOfExpect,
    ConvertExpect,
    Expect,
    GmemAllocate,
    GmemPunchHole,
    GuestConvert,
    GuestParallel,
    GuestVerify,
    GuestWrite,
    HostRead,
    HostWrite,
    PatternExpect,
    QmpCommand,
    QmpExpect,
    Range,
    Sleep,
    Step,
    VmCont,
    VmReset,
    VmStop,
    WaitEvent,
    _GuestStep,
    _RangeStep,
    check_parallel,
)
from qmpgmem.scenario.units import format_size

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

# -- the VM ------------------------------------------------------------------------------------

_REGION_ID = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
#: Error type of a file backend's ``path`` (the loader prints any ``qmpgmem_*`` message).
FILE_PATH_ERROR: Final = "qmpgmem_file_path"

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
    #: Backing file; only for backend file. A plain file name is a file in the run's private
    #: directory (None: ``<id>.mem`` there); an absolute path is a host file outside it, which
    #: a run refuses without ``--allow-unsafe`` (docs/security.md).
    path: str | None = None
    #: What to do when the backing file exists: refuse (the default) or use it as it is.
    existing: Literal["refuse", "use"] = "refuse"
    #: Leave a backing file qmpgmem created at an absolute path behind after the run.
    keep: bool = False
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

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if "\0" in value:
            raise PydanticCustomError(
                FILE_PATH_ERROR, "{message}", {"message": "a path cannot contain a NUL byte"}
            )
        if not value.startswith("/") and (value in ("", ".", "..") or "/" in value):
            raise PydanticCustomError(
                FILE_PATH_ERROR,
                "{message}",
                {
                    "message": "a relative path is a file name in the run's private directory "
                    f"(no '/', not '.' or '..'), got {value!r}; a file elsewhere needs an "
                    "absolute path (and run --allow-unsafe)"
                },
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
        for key, default in (("existing", "refuse"), ("keep", False)):
            if getattr(self, key) != default and self.backend != "file":
                errors.append(
                    _detail(
                        (key,),
                        ErrorType.INCONSISTENT,
                        f"{key} is only for backend file, this region is {self.backend}",
                        getattr(self, key),
                    )
                )
        if self.keep and not self.outside_run_dir:
            errors.append(
                _detail(
                    ("keep",),
                    ErrorType.INCONSISTENT,
                    "keep is for a file at an absolute path; a file in the run directory is "
                    "kept with it (a run that did not pass, --keep-run-dirs)",
                    self.keep,
                )
            )
        _raise(type(self).__name__, errors)
        if gmem and self.flavour is None:
            object.__setattr__(self, "flavour", "auto")  # frozen: fill the default in place
        return self

    @property
    def outside_run_dir(self) -> bool:
        """The backing file is a host file outside the run directory (an absolute path)."""
        return self.backend == "file" and self.path is not None and self.path.startswith("/")


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
