"""Run one scenario on one engine and judge it: scenario x host x engine -> ScenarioResult.

Why here: the engines only do things and report what they saw; this module knows when a
scenario cannot run on this host (requirements, engine limits: a skip with the reason) or at
all (a guest step while the VM is paused: an error), and which status a run ends in; what a
step means and which expectation applies is :mod:`qmpgmem.step_runner`'s. It always tears
the engine down, and keeps the run's files only when the run did not pass.
"""

from __future__ import annotations

import asyncio
import difflib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from qmpgmem.engines.base import Engine
from qmpgmem.engines.kvm.backend import HYPERCALL_NEVER_RETURNS
from qmpgmem.errors import QmpgmemError, UnsupportedStep
from qmpgmem.guest import protocol
from qmpgmem.once import OnceCache
from qmpgmem.report.result import ScenarioResult, Status, StepResult, result_id
from qmpgmem.rundir import exclusive_dir, move_contents
from qmpgmem.sanitize import file_name_part, shell_comment, shell_word
from qmpgmem.scenario.loader import LoadedScenario
from qmpgmem.scenario.model import (
    GmemAllocate,
    GmemPunchHole,
    GuestConvert,
    GuestParallel,
    HostWrite,
    QmpCommand,
    Scenario,
    Step,
    WaitEvent,
)
from qmpgmem.step_runner import StepRunner, unchecked_warnings

if TYPE_CHECKING:
    from qmpgmem.engines.qemu.flavours import FlavourPlan
    from qmpgmem.host.facts import KvmFacts, QemuFacts


@dataclass
class HostContext:
    """What the runner needs to know of the host to decide skips and build engines."""

    kvm_backend: str  # kvm_intel, kvm_amd, kvm_pvm, or "" without /dev/kvm
    kvm_usable: bool
    #: why /dev/kvm cannot be used, when it cannot ("/dev/kvm does not exist (...)")
    kvm_unusable: str = ""
    kernel_release: str = ""
    qemu_binaries: list[str] = field(default_factory=list)  # in order of preference
    qemu_versions: dict[str, str | None] = field(default_factory=dict)
    facts: Any = None  # qmpgmem.host.HostFacts when probed

    @property
    def qemu_binary(self) -> str | None:
        """The preferred QEMU binary (the first one given)."""
        return self.qemu_binaries[0] if self.qemu_binaries else None

    @property
    def qemu_version(self) -> str | None:
        b = self.qemu_binary
        return self.qemu_versions.get(b) if b else None


@dataclass
class RunOptions:
    engine: str = "qemu"
    accel: str | None = None  # overrides the scenario's vm.accel
    artifacts_dir: Path = Path("qmpgmem-artifacts")
    keep_run_dirs: bool = False
    #: the run opted in to scenario steps that run programs or write host files
    #: (``run --allow-unsafe``; docs/security.md)
    allow_unsafe: bool = False
    #: the QEMU binary this run must use (``run --matrix``); None: the first of the host's
    #: binaries that meets the scenario's requirements
    qemu: str | None = None
    #: which run of a ``--repeat`` this is (0-based); None when the scenario runs once
    repeat_index: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_accel(wanted: str, host: HostContext) -> str:
    if wanted == "auto":
        return "kvm" if host.kvm_usable else "tcg"
    return wanted


def accel_note(wanted: str, resolved: str, host: HostContext) -> str | None:
    """Why ``auto`` ended on TCG, so a fallback is never silent; None otherwise."""
    if wanted == "auto" and resolved == "tcg":
        return f"auto fell back to TCG: {host.kvm_unusable or '/dev/kvm is not usable'}"
    return None


# -- which steps an engine can run on this host ---------------------------------------------------

_QEMU_ONLY = (QmpCommand, WaitEvent)
#: QEMU aligns the RAM size given with -m to this (measured with 10.0.2 on x86).
QEMU_RAM_GRANULE = 8192
_KVM_ONLY = (HostWrite, GmemPunchHole, GmemAllocate)


def step_skip_reason(step: Step, engine: str, accel: str, host: HostContext) -> str | None:
    """Why ``step`` cannot run with this engine on this host, or None."""
    if isinstance(step, GuestParallel):
        reasons = (step_skip_reason(sub, engine, accel, host) for sub in step.steps)
        return next((why for why in reasons if why), None)
    if engine == "kvm" and isinstance(step, _QEMU_ONLY):
        return f"step {step.action} needs the qemu engine (the kvm engine has no QMP monitor)"
    if engine == "qemu" and isinstance(step, _KVM_ONLY):
        why = (
            "qmpgmem has no host mapping of QEMU's guest memory to write through"
            if isinstance(step, HostWrite)
            else "QEMU exposes no guest_memfd fd"
        )
        return f"step {step.action} needs the kvm engine ({why})"
    if isinstance(step, GuestConvert):
        if accel == "tcg":
            return (
                "guest.convert needs KVM: TCG does not implement the KVM_HC_MAP_GPA_RANGE hypercall"
            )
        if host.kvm_backend in HYPERCALL_NEVER_RETURNS:
            return (
                "guest.convert needs a KVM hypercall that returns to the guest; KVM backend "
                f"{host.kvm_backend} (software virtualization) never returns from "
                "vmcall/vmmcall"
            )
        if host.kvm_backend not in ("kvm_intel", "kvm_amd"):
            return f"guest.convert needs kvm_intel or kvm_amd; KVM backend is {host.kvm_backend!r}"
    return None


#: Shared by the runs in progress at once (``run -j``): one QEMU start per binary and flavour.
_FLAVOUR_CACHE: OnceCache[tuple[str, str], FlavourPlan] = OnceCache()


async def confirmed_flavour(flavour: str, qemu: QemuFacts, kvm: KvmFacts) -> FlavourPlan:
    """The flavour plan confirmed with the real binary, once per binary and flavour."""
    from qmpgmem.engines.qemu.flavours import plan_flavour_confirmed

    return await _FLAVOUR_CACHE.get(
        (flavour, qemu.binary), lambda: plan_flavour_confirmed(flavour, qemu, kvm)
    )


class ScenarioRun:
    """One scenario on one engine: preflight, steps, judgement, artifacts."""

    def __init__(
        self,
        loaded: LoadedScenario,
        host: HostContext,
        options: RunOptions,
        engine_factory: Any,
    ) -> None:
        self.loaded = loaded
        self.sc: Scenario = loaded.scenario
        self.host = host
        self.options = options
        self.engine_factory = engine_factory
        wanted = options.accel or self.sc.vm.accel
        self.accel = resolve_accel(wanted, host)
        self.accel_note = accel_note(wanted, self.accel, host)
        self.qemu_binary = self._choose_qemu()
        self.steps: list[StepResult] = []
        self.model: Any = None
        self.gmem_plan: FlavourPlan | None = None  # chosen when the VM uses guest_memfd

    def _result(self, status: Status, reason: str, t0: float, **kw: Any) -> ScenarioResult:
        qemu = self.qemu_binary if self.options.engine == "qemu" else None
        version = self.host.qemu_versions.get(qemu) if qemu else None
        return ScenarioResult(
            id=result_id(self.sc.name, self.options.engine, qemu, version),
            scenario=self.sc.name,
            file=str(self.loaded.path),
            status=status,
            reason=reason,
            duration_s=round(time.monotonic() - t0, 4),
            engine=self.options.engine,
            accel=self.accel if self.options.engine == "qemu" else "kvm",
            accel_note=self.accel_note if self.options.engine == "qemu" else None,
            tags=list(self.sc.tags),
            qemu=qemu,
            qemu_version=version,
            steps=self.steps,
            repeat_index=self.options.repeat_index,
            **kw,
        )

    def _unmet(self, qemu_binary: str | None) -> str | None:
        if self.host.facts is None:
            return None
        from qmpgmem.host import evaluate_requirements

        qemu = self.host.facts.qemu_for(qemu_binary) if qemu_binary else None
        why = evaluate_requirements(
            self.sc.requires, self.host.facts, qemu, vm_type=self.sc.vm.vm_type
        )
        return str(why) if why else None

    def _choose_qemu(self) -> str | None:
        """The binary the options pin (``--matrix``: a skip names what it lacks), else the
        first QEMU binary that meets the scenario's requirements (else the first)."""
        if self.options.qemu is not None:
            return self.options.qemu
        for binary in self.host.qemu_binaries:
            if self._unmet(binary) is None:
                return binary
        return self.host.qemu_binary

    def lifecycle_problem(self) -> str | None:
        """A guest step while the VM is paused (R24), with its line: it could only time out."""
        from qmpgmem.model.lifecycle import paused_guest_steps

        for problem in paused_guest_steps(self.sc.steps):
            i = problem.step_index
            line = self.loaded.step_lines[i] if i < len(self.loaded.step_lines) else None
            where = f"step {i + 1}" + (f" (line {line})" if line else "")
            return f"{where}: {problem.message}"
        return None

    def engine_limits(self) -> str | None:
        """Why this engine cannot run the scenario at all, whatever the host has."""
        engine = self.options.engine
        wanted = self.options.accel or self.sc.vm.accel
        if engine == "kvm" and wanted == "tcg":
            source = "--accel tcg" if self.options.accel else "vm.accel tcg"
            return (
                f"{source} asks for QEMU's emulator; the kvm engine runs on KVM only "
                "(--accel applies to the qemu engine)"
            )
        if engine == "qemu" and self.sc.vm.vm_type != "default":
            return (
                f"vm_type {self.sc.vm.vm_type} is for the kvm engine; with QEMU the VM type "
                "follows from the guest_memfd flavour (sev-snp, tdx)"
            )
        ram = protocol.SYS_SIZE + sum(r.size for r in self.sc.vm.memory)
        if engine == "qemu" and ram % QEMU_RAM_GRANULE:
            return (
                f"QEMU rounds guest RAM (-m) up to {QEMU_RAM_GRANULE // 1024} KiB and then "
                f"refuses NUMA nodes that do not add up to it; this VM has {ram // 1024} KiB "
                "(the guest's 4 MiB plus the regions)"
            )
        if engine == "kvm" and self.sc.vm.machine != "microvm":
            return (
                f"machine {self.sc.vm.machine} needs the qemu engine; the kvm engine has no "
                "firmware or chipset and boots the micro guest ROM as on microvm"
            )
        if engine != "qemu" and self.sc.expect_trace:
            return "expect_trace reads QEMU trace events; the kvm engine has no QEMU"
        for i, step in enumerate(self.sc.steps):
            if isinstance(step, _QEMU_ONLY + _KVM_ONLY):
                why = step_skip_reason(step, engine, self.accel, self.host)
                if why:
                    return f"step {i + 1}: {why}"
        return None

    def preflight(self) -> str | None:
        """The skip reason when the host cannot run the scenario, before anything starts."""
        if (self.options.engine == "kvm" or self.accel == "kvm") and not self.host.kvm_usable:
            return f"needs kvm; {self.host.kvm_unusable or '/dev/kvm is not usable'}"
        why = self._unmet(self.qemu_binary)
        if why:
            return why
        for i, step in enumerate(self.sc.steps):
            why = step_skip_reason(step, self.options.engine, self.accel, self.host)
            if why:
                return f"step {i + 1}: {why}"
        return None

    def qmp_schema_problem(self) -> str | None:
        """A qmp or wait_event step naming what the chosen QEMU's query-qmp-schema lacks.

        Checked before the VM starts, so a misspelt command fails at once, not half-way.
        """
        if self.options.engine != "qemu" or self.host.facts is None or not self.qemu_binary:
            return None
        qemu = self.host.facts.qemu_for(self.qemu_binary)
        if qemu is None or not qemu.qmp_commands:
            return None
        for i, step in enumerate(self.sc.steps):
            if isinstance(step, QmpCommand):
                name, known, kind = step.command, qemu.qmp_commands, "command"
            elif isinstance(step, WaitEvent) and qemu.qmp_events:
                name, known, kind = step.event, qemu.qmp_events, "event"
            else:
                continue
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                return (
                    f"step {i + 1}: QEMU {qemu.version_str} ({qemu.binary}) has no QMP {kind} "
                    f"{name!r} in its query-qmp-schema{hint}"
                )
        return None

    def unsafe_problem(self) -> str | None:
        """Without ``--allow-unsafe``: the first use of the scenario that reaches the host
        (a qmp step, qemu_args, a file outside the run directory; qmpgmem/policy.py).

        Decided on every host alike, before the flavour and the requirements: a refused
        scenario is an error wherever it runs, never a skip on one host and an error on
        another. ``qmp`` steps are judged against the chosen binary's query-qmp-schema.
        """
        if self.options.allow_unsafe:
            return None
        from qmpgmem.policy import unsafe_uses

        policy = None
        if self.options.engine == "qemu" and self.host.facts is not None and self.qemu_binary:
            qemu = self.host.facts.qemu_for(self.qemu_binary)
            policy = qemu.qmp_policy() if qemu is not None else None
        uses = unsafe_uses(self.loaded, self.options.engine, policy)
        if not uses:
            return None
        more = f" (and {len(uses) - 1} more)" if len(uses) > 1 else ""
        return uses[0].reason(self.loaded.path) + more

    async def plan_guest_memfd(self) -> str | None:
        """Choose the QEMU guest_memfd flavour; a skip reason quoting QEMU's own refusal.

        Runs before the requirement check so that a host without SEV-SNP/TDX reports what
        the real binary said when handed the flavour's command line.
        """
        gmem = [r for r in self.sc.vm.memory if r.backend == "guest_memfd"]
        if self.options.engine != "qemu" or not gmem or self.host.facts is None:
            return None
        flavours = {r.flavour or "auto" for r in gmem}
        if len(flavours) > 1:
            return f"one VM cannot mix guest_memfd flavours {sorted(flavours)}"
        qemu = self.host.facts.qemu_for(self.qemu_binary)
        if qemu is None:
            return "guest_memfd memory needs a probed QEMU binary"
        self.gmem_plan = await confirmed_flavour(flavours.pop(), qemu, self.host.facts.kvm)
        reason: str | None = self.gmem_plan.skip_reason
        if reason is None and self.gmem_plan.machine not in (None, self.sc.vm.machine):
            reason = (
                f"flavour {self.gmem_plan.name} needs machine {self.gmem_plan.machine}, "
                f"the scenario asks for {self.sc.vm.machine}"
            )
        return reason

    async def decide(self) -> tuple[Status | None, str]:
        """Before anything starts: (SKIPPED, why), (ERROR, why), or (None, "") to run.

        Also what ``qmpgmem run --plan`` prints, so a plan and a run never disagree.
        """
        invalid = self.lifecycle_problem()
        if invalid:
            return Status.ERROR, invalid
        skip = self.engine_limits()
        if skip:  # nothing of the scenario can run on this engine, its unsafe parts neither
            return Status.SKIPPED, skip
        refused = self.unsafe_problem()
        if refused:
            return Status.ERROR, refused
        skip = await self.plan_guest_memfd() or self.preflight()
        if skip:
            return Status.SKIPPED, skip
        invalid = self.qmp_schema_problem()
        if invalid:
            return Status.ERROR, invalid
        return None, ""

    async def plan(self) -> ScenarioResult:
        """The decision alone, as a result: would-skip with the reason, error, or would-run
        (naming the binary), and no steps."""
        t0 = time.monotonic()
        status, reason = await self.decide()
        if status is None:
            qemu = f" with {self.qemu_binary}" if self.options.engine == "qemu" else ""
            return self._result(Status.WOULD_RUN, f"would run{qemu}", t0)
        if status is Status.SKIPPED:
            status = Status.WOULD_SKIP
        return self._result(status, reason, t0)

    async def run(self) -> ScenarioResult:
        t0 = time.monotonic()
        decided, decided_reason = await self.decide()
        if decided is not None:
            return self._result(decided, decided_reason, t0)
        try:
            engine: Engine = self.engine_factory(self)
        except UnsupportedStep as exc:
            return self._result(Status.SKIPPED, str(exc), t0)
        except QmpgmemError as exc:
            return self._result(Status.ERROR, str(exc), t0)
        status, reason, boot_s = Status.PASSED, "", None
        try:
            async with asyncio.timeout(self.sc.timeouts.total):
                try:
                    await engine.start()
                finally:
                    boot_s = getattr(engine, "ready_after", None)
                self.model = self._make_model(engine)
                stepper = StepRunner(self.loaded, self.model)
                for index, step in enumerate(self.sc.steps):
                    result = await stepper.run_step(engine, index, step)
                    self.steps.append(result)
                    if result.status is not Status.PASSED:
                        status, reason = result.status, f"step {index + 1}: {result.message}"
                        break
        except TimeoutError:
            status = Status.TIMEOUT
            reason = f"the scenario did not finish within {self.sc.timeouts.total:g} s"
        except UnsupportedStep as exc:
            status, reason = Status.SKIPPED, str(exc)
        except QmpgmemError as exc:
            status, reason = Status.ERROR, str(exc)
        except BaseException:  # Ctrl-C, cancellation: stop the VM, keep nothing
            await engine.stop()
            shutil.rmtree(engine.artifacts.run_dir, ignore_errors=True)
            raise
        await engine.stop()
        if status is Status.PASSED and self.sc.expect_trace:
            why = self._check_traces(engine)
            if why:
                status, reason = Status.FAILED, why
        artifacts = None
        keep = self.options.keep_run_dirs or status in (Status.FAILED, Status.ERROR, Status.TIMEOUT)
        run_dir = engine.artifacts.run_dir
        if keep and run_dir.exists():
            artifacts = str(self._keep_artifacts(engine))
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
        warnings = unchecked_warnings(self.sc.steps, self.steps) if status is Status.PASSED else []
        return self._result(
            status,
            reason,
            t0,
            artifacts=artifacts,
            reproduce=self.reproduce_command(),
            boot_s=boot_s,
            warnings=warnings,
        )

    def _make_model(self, engine: Engine) -> Any:
        try:
            from qmpgmem.model import model_for_run
        except ImportError:
            return None
        facts = SimpleNamespace(
            qemu_version=self.host.qemu_versions.get(self.qemu_binary or ""),
            kvm_backend=self.host.kvm_backend,
        )
        flavour = self.gmem_plan.name if self.gmem_plan is not None else None
        return model_for_run(self.sc, self.options.engine, facts, flavour)

    def reproduce_command(self) -> str:
        """One ``sh`` line: every word quoted (``shell_word``), no newline whatever the name."""
        argv = ["qmpgmem", "run", str(self.loaded.path), "--engine", self.options.engine]
        if self.options.engine == "qemu":
            argv += ["--accel", self.accel]
            if self.qemu_binary:
                argv += ["--qemu", self.qemu_binary]
        if self.options.allow_unsafe:
            argv.append("--allow-unsafe")
        argv += ["-k", self.sc.name, "--keep-run-dirs"]
        return " ".join(shell_word(word) for word in argv)

    def _keep_artifacts(self, engine: Engine) -> Path:
        """Move the run directory to a directory of its own under ``--artifacts``.

        ``<name>-<engine>-<pid>`` (``-2``, ``-3``... when taken: names that differ only in
        characters a file name drops, a second variant in one process), never replacing
        another run's files; ``reproduce.sh`` has one command line and comment lines only.
        """
        arts = engine.artifacts
        stem = f"{file_name_part(self.sc.name)}-{self.options.engine}-{os.getpid()}"
        dest = exclusive_dir(self.options.artifacts_dir, stem)
        move_contents(arts.run_dir, dest)
        lines = [
            "#!/bin/sh",
            shell_comment(f"reproduce this scenario run ({self.sc.name})"),
            self.reproduce_command(),
        ]
        if arts.reproduce:
            lines += [
                "# the VM alone (fds 3/4 are QMP and the guest channel in the real run):",
                shell_comment(arts.reproduce),
            ]
        (dest / "reproduce.sh").write_text("\n".join(lines) + "\n")
        return dest

    def _check_traces(self, engine: Engine) -> str | None:
        from qmpgmem.engines.qemu.trace import count_matching, read_trace

        path = engine.artifacts.files.get("trace")
        if path is None:
            return "expect_trace needs the qemu engine's trace log"
        records = read_trace(path, {t.event for t in self.sc.expect_trace})
        for t in self.sc.expect_trace:
            n = count_matching(records, t.event, dict(t.fields))
            if n < t.min_count or (t.max_count is not None and n > t.max_count):
                bound = (
                    f"at least {t.min_count}"
                    if t.max_count is None
                    else (f"between {t.min_count} and {t.max_count}")
                )
                return f"trace {t.event} {dict(t.fields)}: expected {bound} occurrence(s), saw {n}"
        return None
