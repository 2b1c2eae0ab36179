"""A scenario's steps on a started engine: each under its timeout, judged, and fed to the model.

Why apart from :mod:`qmpgmem.runner`: the runner decides whether a scenario runs and what its
run ends in; this module knows what one step means — which engine primitive it is, which
expectation applies (written in the file, the previous observation, or the memory model's
prediction) — and what the steps of a passed run left unchecked (:func:`unchecked_warnings`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from qmpgmem.engines.base import Engine, GuestJob, GuestRange
from qmpgmem.errors import EngineError, GuestProtocolError, UnsupportedStep
from qmpgmem.expectations import (
    StepFailed,
    check_any_hash,
    check_convert,
    check_hash,
    check_qmp,
    describe_range,
    stated_hash,
    stated_hashes,
)
from qmpgmem.guest import protocol
from qmpgmem.report.result import Status, StepResult
from qmpgmem.scenario.loader import LoadedScenario
from qmpgmem.scenario.model import (
    AnyOfExpect,
    GmemAllocate,
    GmemPunchHole,
    GuestConvert,
    GuestParallel,
    GuestVerify,
    GuestWrite,
    HostRead,
    HostWrite,
    QmpCommand,
    Range,
    Sleep,
    Step,
    VmCont,
    VmReset,
    VmStop,
    WaitEvent,
)

__all__ = ["StepRunner", "step_timeout", "unchecked_warnings"]

#: What a read without an expectation the model can predict records (and the report shows).
NOT_PREDICTED = "no expectation (the model cannot predict this range); recorded"


def step_timeout(step: Step, default: float) -> float:
    """The budget of one step: its own ``timeout``, else ``default`` (``timeouts.step``).

    A ``sleep`` without a ``timeout`` of its own gets its seconds and one more (a sleep longer
    than ``timeouts.step`` is what the scenario asks for); with one, that bounds it, so a
    ``timeout`` shorter than the sleep ends the step as a timeout. ``wait_event``'s
    ``timeout`` is how long it waits for the event (not seeing it is a failure), and the step
    gets one second more.
    """
    if isinstance(step, WaitEvent):
        return step.timeout + 1.0
    if isinstance(step, Sleep) and step.timeout is None:
        return max(default, step.seconds) + 1.0
    return step.timeout if step.timeout is not None else default


def _reads(step: Step) -> bool:
    """A step whose outcome is judged against an expectation: a verify or a host read."""
    if isinstance(step, GuestParallel):
        return any(isinstance(sub, GuestVerify) for sub in step.steps)
    return isinstance(step, GuestVerify | HostRead)


def unchecked_warnings(steps: list[Step], results: list[StepResult]) -> list[str]:
    """A warning when a run read guest memory but checked none of it.

    Why: a read without ``expect`` is judged against the model; where the model cannot
    predict (a QMP command it does not follow, content it marks Unknown), the read is only
    recorded. A run whose every read was recorded passed without checking anything, and
    must say so (``run --strict`` counts the warning as a failure).
    """
    reads = [res for step, res in zip(steps, results, strict=False) if _reads(step)]
    if not reads or any(res.expected is not None for res in reads):
        return []
    numbers = ", ".join(str(res.index) for res in reads)
    which = f"step {numbers}" if len(reads) == 1 else f"steps {numbers}"
    return [
        f"nothing was checked: the memory model could not predict any of the {len(reads)} "
        f"read(s) ({which}) and none states an expect, so each was recorded, not verified"
    ]


@dataclass(frozen=True)
class _Want:
    """What a verify or a host read must see: ``hashes`` (None: the previous observation;
    empty: nothing the model can predict), the words for it, and where it came from."""

    hashes: list[int] | None
    text: str
    computed: bool = False
    any_of: bool = False


def _consume(fut: asyncio.Future[Any]) -> None:
    """Retrieve a background expectation nobody awaits (its step already ended)."""
    if not fut.cancelled():
        fut.exception()


class StepRunner:
    """Runs steps on ``engine`` in order, judging each; the model follows every passed step."""

    def __init__(self, loaded: LoadedScenario, model: Any) -> None:
        self.loaded = loaded
        self.sc = loaded.scenario
        self.model = model
        #: the last hash seen per (region, offset, size): what ``unchanged`` compares with
        self.observed: dict[tuple[str, int, int], int] = {}

    async def run_step(self, engine: Engine, index: int, step: Step) -> StepResult:
        line = self.loaded.step_lines[index] if index < len(self.loaded.step_lines) else None
        t0 = time.monotonic()
        res = StepResult(
            index=index + 1, action=step.action, name=step.name, line=line, status=Status.PASSED
        )
        timeout = step_timeout(step, self.sc.timeouts.step)
        try:
            async with asyncio.timeout(timeout):
                await self._apply(engine, step, res)
        except StepFailed as exc:
            res.status, res.message = Status.FAILED, str(exc)
            res.expected, res.seen = exc.expected, exc.seen
        except TimeoutError:
            res.status = Status.TIMEOUT
            res.message = f"{step.action} did not finish within {timeout:g} s"
            await engine.note_hang(f"step {index + 1}: {res.message}")
        except UnsupportedStep as exc:
            res.status, res.message = Status.SKIPPED, str(exc)
        except GuestProtocolError as exc:
            res.status, res.message = Status.ERROR, f"{step.action}: {exc}"
        except EngineError as exc:
            res.status, res.message = Status.ERROR, f"{step.action}: {exc}"
        res.duration_s = round(time.monotonic() - t0, 6)
        if res.status is Status.PASSED and self.model is not None:
            self.model.apply_step(step)
        return res

    async def _apply(self, engine: Engine, step: Step, res: StepResult) -> None:
        if isinstance(step, GuestParallel):
            await self._guest_jobs(engine, list(step.steps), res)
        elif isinstance(step, GuestWrite | GuestVerify | GuestConvert) and self.sc.vm.vcpus > 1:
            await self._guest_jobs(engine, [step], res)
        elif isinstance(step, GuestWrite):
            await engine.guest_write(self._resolve(engine, step.range), step.seed)
        elif isinstance(step, HostWrite):
            rng = self._resolve(engine, step.range)
            await engine.host_write(rng, protocol.pattern_bytes(step.seed, rng.offset, rng.size))
        elif isinstance(step, GuestVerify | HostRead):
            rng = self._resolve(engine, step.range)
            wanting = asyncio.ensure_future(asyncio.to_thread(self._expectation, step, rng))
            try:
                if isinstance(step, GuestVerify):
                    seen = await engine.guest_hash(rng)
                else:
                    got = await engine.host_hash(rng)
                    seen, res.via = got.value, got.via
            except BaseException:
                wanting.add_done_callback(_consume)
                raise
            self._judge_hash(step, rng, seen, res, await wanting)
        elif isinstance(step, GuestConvert):
            rng = self._resolve(engine, step.range)
            ret = await engine.guest_convert(rng, step.to == "private")
            res.seen = f"hypercall returned {ret}"
            check_convert(step, rng, ret)
        elif isinstance(step, GmemPunchHole):
            await engine.gmem_punch_hole(self._resolve(engine, step.range))
        elif isinstance(step, GmemAllocate):
            await engine.gmem_allocate(self._resolve(engine, step.range))
        elif isinstance(step, QmpCommand):
            reply = await engine.qmp(step.command, dict(step.arguments))
            res.seen = check_qmp(step, reply)
        elif isinstance(step, VmStop):
            await engine.vm_stop()
        elif isinstance(step, VmCont):
            await engine.vm_cont()
        elif isinstance(step, VmReset):
            await engine.vm_reset()
        elif isinstance(step, WaitEvent):
            try:
                ev = await engine.wait_event(step.event, dict(step.data), step.timeout)
            except TimeoutError:
                raise StepFailed(
                    f"no {step.event} event with data {step.data} within {step.timeout:g} s"
                ) from None
            res.seen = str(ev.get("data", {}))
        elif isinstance(step, Sleep):
            await engine.sleep(step.seconds)
        else:  # pragma: no cover - the union is closed
            raise UnsupportedStep(f"unknown step {step.action}")

    async def _guest_jobs(
        self, engine: Engine, steps: list[GuestWrite | GuestVerify | GuestConvert], res: StepResult
    ) -> None:
        """Guest steps on the vCPUs they name, started together; each judged on its own.

        The result names the vCPU and the APIC ID that answered for every sub-step, so a
        report shows where each one ran.
        """
        rngs = [self._resolve(engine, s.range) for s in steps]
        jobs = [
            GuestJob(
                kind="write"
                if isinstance(s, GuestWrite)
                else "hash"
                if isinstance(s, GuestVerify)
                else "convert",
                rng=rng,
                vcpu=s.vcpu,
                seed=s.seed if isinstance(s, GuestWrite) else 0,
                private=isinstance(s, GuestConvert) and s.to == "private",
            )
            for s, rng in zip(steps, rngs, strict=True)
        ]
        results = await engine.guest_jobs(jobs)
        seen, expected, failures, notes = [], [], [], []
        for index, (s, rng, out) in enumerate(zip(steps, rngs, results, strict=True)):
            where = f"on vCPU {s.vcpu} (APIC {out.apic})"
            label = where if len(steps) == 1 else f"steps[{index}] {s.action} {where}"
            part = StepResult(index=index, action=s.action, status=Status.PASSED)
            try:
                if isinstance(s, GuestVerify):
                    assert out.value is not None
                    self._judge_hash(s, rng, out.value, part)
                elif isinstance(s, GuestConvert):
                    assert out.value is not None
                    part.seen = f"hypercall returned {out.value}"
                    check_convert(s, rng, out.value)
            except StepFailed as exc:
                failures.append(f"{label}: {exc}")
            if part.message:
                notes.append(f"{label}: {part.message}")
            res.computed |= part.computed
            seen.append(f"{label}: {part.seen or 'done'}")
            if part.expected:
                expected.append(f"{label}: {part.expected}")
        res.seen = "; ".join(seen)
        res.expected = "; ".join(expected) or None
        res.message = "; ".join(failures or notes) or (
            where if len(steps) == 1 else f"{len(steps)} vCPUs at once"
        )
        if failures:
            raise StepFailed(res.message, res.expected, res.seen)

    @staticmethod
    def _resolve(engine: Engine, r: Range) -> GuestRange:
        return engine.resolve(r.region, r.offset, r.size)

    def _expectation(self, step: GuestVerify | HostRead, rng: GuestRange) -> _Want:
        """The hashes the file's expectation or the model's prediction stands for.

        Why apart from judging: computing them over a large range costs about as much as the
        observation itself, so :meth:`_apply` runs this while the guest or the host reads.
        """
        exp = step.expect
        if exp == "unchanged":
            return _Want(None, "the content seen at the previous observation")
        if isinstance(exp, AnyOfExpect):
            wants, text = stated_hashes(exp, rng.offset, rng.size)
            return _Want(wants, text, any_of=True)
        if exp is not None:
            want, text = stated_hash(exp, rng.offset, rng.size)
            return _Want([want], text)
        view = "guest" if isinstance(step, GuestVerify) else "host"
        predicted = (
            self.model.expected(rng.region, rng.offset, rng.size, view=view) if self.model else None
        )
        if predicted is None:
            return _Want([], NOT_PREDICTED)
        want, text = predicted
        return _Want([want], text, computed=True)

    def _judge_hash(
        self,
        step: GuestVerify | HostRead,
        rng: GuestRange,
        seen: int,
        res: StepResult,
        want: _Want | None = None,
    ) -> None:
        """Check ``seen`` against the expectation (computed here unless ``want`` is given)."""
        want = want if want is not None else self._expectation(step, rng)
        key = (rng.region, rng.offset, rng.size)
        previous = self.observed.get(key)
        self.observed[key] = seen
        res.seen = f"{seen:#018x}"
        who = "the guest" if isinstance(step, GuestVerify) else "the host"
        if want.hashes is None:  # unchanged
            if previous is None:
                raise StepFailed(
                    f"{describe_range(rng)}: 'unchanged' needs an earlier "
                    "guest.verify or host.read of the same range"
                )
            hashes = [previous]
        elif want.any_of:
            res.expected = want.text
            check_any_hash(step.action, rng, want.hashes, want.text, seen, who)
            return
        elif not want.hashes:
            res.message = NOT_PREDICTED
            return
        else:
            hashes = want.hashes
        res.computed = want.computed
        res.expected = f"{hashes[0]:#018x} ({want.text})"
        check_hash(step.action, rng, hashes[0], want.text, seen, who)
