"""What a run produced: per-step and per-scenario results, statuses, the host fingerprint.

Why pydantic: the JSON report is ``model_dump_json`` of these models, and the JUnit writer,
the CLI table and the pytest plugin read the same objects.
"""

from __future__ import annotations

import os
import shutil
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from qmpgmem.report.host import FirmwareImage, QemuBinary


class Status(StrEnum):
    PASSED = "passed"
    FAILED = "failed"  # an expectation did not hold
    ERROR = "error"  # the harness or the VM broke: crash, QEMU exit, malformed reply
    TIMEOUT = "timeout"
    SKIPPED = "skipped"  # with a reason
    #: ``run --repeat N``: the repeats ended in different statuses (``repeats`` says which)
    FLAKY = "flaky"
    # `qmpgmem run --plan`: the decision a run would make, nothing started
    WOULD_RUN = "would-run"
    WOULD_SKIP = "would-skip"  # with the reason

    @property
    def ok(self) -> bool:
        return self in (Status.PASSED, Status.SKIPPED, Status.WOULD_RUN, Status.WOULD_SKIP)


class StepResult(BaseModel):
    index: int
    action: str
    name: str | None = None
    line: int | None = None
    status: Status
    message: str = ""
    duration_s: float = 0.0
    expected: str | None = None
    seen: str | None = None
    computed: bool = False  # the expectation came from the memory model, not the file
    #: which path read the memory of a host.read (map_files, guest_memfd mmap, pmemsave, ...)
    via: str | None = None


class HostInfo(BaseModel):
    """The host fingerprint of a report: enough to tell two hosts, or two setups of one host,
    apart (qmpgmem/host/fingerprint.py fills it; every report kind carries it)."""

    hostname: str = ""
    #: /proc/cpuinfo "model name", e.g. "AMD EPYC 7763 64-Core Processor"
    cpu_model: str = ""
    #: the CPU under KVM: "bare metal", "virtual (KVM)", "emulated (QEMU TCG, qmpgmem lab)"
    cpu: str = ""
    kernel_release: str = ""
    kvm_backend: str = ""
    #: the preferred QEMU binary (the first of ``qemu``) and its version
    qemu_binary: str | None = None
    qemu_version: str | None = None
    #: every QEMU binary given (or found on PATH), in order of preference
    qemu: list[QemuBinary] = Field(default_factory=list)
    #: the firmware images found, for the system and under each binary's own prefix
    firmware: list[FirmwareImage] = Field(default_factory=list)
    qmpgmem_version: str = ""
    python_version: str = ""
    #: the engines of a run, ","-joined ("qemu,kvm"); "kvm" for kernel-contract, "" for probe
    engine: str = ""

    def properties(self) -> dict[str, str]:
        """The fingerprint as flat name -> text pairs, for JUnit or pytest properties:
        ``qemu[0].package_version``, ``firmware[1].path``; None values are left out."""
        out: dict[str, str] = {}
        for key, value in self.model_dump(exclude={"qemu", "firmware"}).items():
            if value is not None:
                out[key] = str(value)
        parts: list[tuple[str, list[QemuBinary] | list[FirmwareImage]]] = [
            ("qemu", self.qemu),
            ("firmware", self.firmware),
        ]
        for name, items in parts:
            for i, item in enumerate(items):
                for key, value in item.model_dump().items():
                    if value is not None:
                        out[f"{name}[{i}].{key}"] = str(value)
        return out


class Repeats(BaseModel):
    """What the repeats of one scenario run (``run --repeat N``) saw, folded into its result
    by :mod:`qmpgmem.report.repeats`: every status in run order and the spread of times."""

    runs: int
    #: the status of each run, in the order they ran
    statuses: list[Status]
    duration_min_s: float
    duration_median_s: float
    duration_max_s: float

    def counts(self) -> str:
        """ "passed 3, failed 2 of 5 runs" (statuses in order of first appearance)."""
        seen = {s: self.statuses.count(s) for s in dict.fromkeys(self.statuses)}
        return ", ".join(f"{s} {n}" for s, n in seen.items()) + f" of {self.runs} runs"

    def spread(self) -> str:
        """ "0.41/0.44/0.52 s (min/median/max)"."""
        return (
            f"{self.duration_min_s:.2f}/{self.duration_median_s:.2f}/{self.duration_max_s:.2f} s"
            " (min/median/max)"
        )


def binary_label(path: str) -> str:
    """A QEMU binary as ids show it: relative to the working directory when below it, the
    bare name when that is what PATH finds, else the path."""
    try:
        here = os.getcwd()
    except OSError:  # the working directory was removed
        here = ""
    if here and path.startswith(here + os.sep):
        return path[len(here) + 1 :]
    name = os.path.basename(path)
    found = shutil.which(name)
    if found and os.path.realpath(found) == os.path.realpath(path):
        return name
    return path


def result_id(
    scenario: str,
    engine: str,
    qemu: str | None = None,
    qemu_version: str | None = None,
    kernel: str | None = None,
) -> str:
    """A result's name wherever one result must be told from another of the same scenario:
    ``basic-smoke [qemu, QEMU 10.0.2 qemu-system-x86_64]``, ``basic-smoke [kvm]``, and with
    the lab's kernels ``… [kvm, kernel 7.2.13]``."""
    parts = [engine]
    if qemu:
        parts.append(f"QEMU {qemu_version or '?'} {binary_label(qemu)}")
    if kernel:
        parts.append(f"kernel {kernel}")
    return f"{scenario} [{', '.join(parts)}]"


class ScenarioResult(BaseModel):
    #: the scenario, its engine, QEMU binary and version (and the lab's kernel): unique in a
    #: report whatever --matrix ran (:func:`result_id`); "" in reports written before it
    id: str = ""
    scenario: str
    file: str
    status: Status
    reason: str = ""
    duration_s: float = 0.0
    engine: str = ""
    #: the accelerator the guest ran on: kvm or tcg (the kvm engine is always kvm)
    accel: str | None = None
    #: why the accelerator is not the one asked for ("auto: /dev/kvm does not exist ...")
    accel_note: str | None = None
    qemu: str | None = None  # the binary this scenario ran with
    qemu_version: str | None = None  # its version ("10.0.2")
    #: the lab kernel's release the result came from (``lab run --kernel A --kernel B``)
    kernel: str | None = None
    tags: list[str] = Field(default_factory=list)  # the scenario's tags
    steps: list[StepResult] = Field(default_factory=list)
    artifacts: str | None = None  # directory kept for a failed run
    reproduce: str | None = None  # one command line that reproduces the run
    boot_s: float | None = None
    #: what a passed run did not establish ("nothing was checked: ..."); --strict fails on it
    warnings: list[str] = Field(default_factory=list)
    #: the 0-based run of a ``--repeat`` result before it is folded (never in a report)
    repeat_index: int | None = Field(default=None, exclude=True)
    #: ``run --repeat N``: every run's status and the spread of their durations
    repeats: Repeats | None = None


class Summary(BaseModel):
    passed: int = 0
    failed: int = 0
    errors: int = 0
    timeouts: int = 0
    skipped: int = 0
    flaky: int = 0
    would_run: int = 0
    would_skip: int = 0

    def counts(self) -> str:
        """The closing line every command prints: "3 passed, 0 failed, ... 1 skipped"."""
        if self.would_run or self.would_skip:  # a plan
            return (
                f"plan: {self.would_run} would run, {self.would_skip} would skip, "
                f"{self.errors} errors"
            )
        flaky = f"{self.flaky} flaky, " if self.flaky else ""
        return (
            f"{self.passed} passed, {self.failed} failed, {self.errors} errors, "
            f"{self.timeouts} timeouts, {flaky}{self.skipped} skipped"
        )

    @classmethod
    def of(cls, results: list[ScenarioResult]) -> Summary:
        def n(s: Status) -> int:
            return sum(1 for r in results if r.status is s)

        return cls(
            passed=n(Status.PASSED),
            failed=n(Status.FAILED),
            errors=n(Status.ERROR),
            timeouts=n(Status.TIMEOUT),
            skipped=n(Status.SKIPPED),
            flaky=n(Status.FLAKY),
            would_run=n(Status.WOULD_RUN),
            would_skip=n(Status.WOULD_SKIP),
        )


class GateViolation(BaseModel):
    """One result that breaks a strict run, and why."""

    scenario: str
    engine: str
    status: Status
    why: str


class Gate(BaseModel):
    """The strict verdict (``run --strict``): skips held against a baseline, no silent TCG."""

    passed: bool
    verdict: str  # one sentence
    baseline: str  # the expected-skips file, or "no baseline"
    violations: list[GateViolation] = Field(default_factory=list)
    #: baseline entries no skip matched (the scenario runs now, or is not in this run)
    unused_expected_skips: list[str] = Field(default_factory=list)


class RunReport(BaseModel):
    summary: Summary
    results: list[ScenarioResult]
    host: HostInfo
    #: False while the run is going on or when it was interrupted: the results so far
    complete: bool = True
    interrupted: str | None = None  # "SIGTERM", "SIGINT", "stdout closed"
    gate: Gate | None = None  # set by --strict
    #: the run allowed unsafe steps (QMP commands that run programs or write host files)
    allow_unsafe: bool = False
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(r.status.ok for r in self.results) and (self.gate is None or self.gate.passed)
