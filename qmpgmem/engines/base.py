"""What every engine offers the runner: start a VM, run primitive operations, stop it.

Why primitives and not steps: the runner owns the scenario semantics (which expectation a
step has, what the model predicts); an engine only knows how to make the guest or the host
do one thing and report what it saw. An engine that cannot do an operation here raises
:class:`~qmpgmem.errors.UnsupportedStep` with the reason, which the runner turns into a skip.
"""

from __future__ import annotations

import abc
import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qmpgmem import fasthash
from qmpgmem.errors import GuestProtocolError, UnsupportedStep
from qmpgmem.guest import protocol

if TYPE_CHECKING:
    from qmpgmem.guest.channel import GuestChannel


@dataclass(frozen=True)
class GuestRange:
    """A scenario range resolved to guest-physical addresses."""

    region: str
    offset: int  # from the region's start; the pattern is a function of it
    size: int
    gpa: int  # guest-physical address of ``offset``


@dataclass(frozen=True)
class GuestJob:
    """One guest operation on a named vCPU (a step with ``vcpu``, or one of guest.parallel)."""

    kind: Literal["write", "hash", "convert"]
    rng: GuestRange
    vcpu: int = 0
    seed: int = 0
    private: bool = False

    def line(self) -> str:
        """The request line the vCPU runs."""
        r = self.rng
        if self.kind == "write":
            return protocol.request_write(r.gpa, r.size, self.seed, r.offset)
        if self.kind == "hash":
            return protocol.request_hash(r.gpa, r.size)
        return protocol.request_convert(r.gpa, r.size, self.private)


@dataclass(frozen=True)
class JobResult:
    """What a job's vCPU answered: its APIC ID, and the hash or the hypercall's rax."""

    apic: int | None
    value: int | None = None


async def run_guest_jobs(channel: GuestChannel, jobs: list[GuestJob]) -> list[JobResult]:
    """One job: ``@<k> ...``; several: armed and started together (``GO``), results in order.

    Why one helper for both engines: they share the guest channel, and the wire forms of a
    job and of its reply are the protocol's, not an engine's.
    """
    if len(jobs) == 1:
        replies = [await channel.request_apic(protocol.request_on(jobs[0].vcpu, jobs[0].line()))]
    else:
        replies = await channel.parallel([(job.vcpu, job.line()) for job in jobs])
    results = []
    for job, (apic, text) in zip(jobs, replies, strict=True):
        parts = text.split()
        try:
            expected = {"write": 0, "hash": 1, "convert": 2}[job.kind]
            if len(parts) != expected or (job.kind == "convert" and parts[0] != "RET"):
                raise ValueError(text)
            value = None if job.kind == "write" else int(parts[-1], 16 if expected == 1 else 10)
        except (ValueError, IndexError):
            raise GuestProtocolError(f"vCPU {job.vcpu}: {job.kind} answered {text!r}") from None
        results.append(JobResult(apic, value))
    return results


@dataclass(frozen=True)
class HostHash:
    """The host's hash of a range, and which path read the memory (the report says it:
    ``map_files``, ``backend file``, ``guest_memfd mmap``, ``pmemsave``, ...)."""

    value: int
    via: str


@dataclass
class RunArtifacts:
    """Files an engine leaves in the run directory; kept on failure, listed in reports."""

    run_dir: Path
    files: dict[str, Path] = field(default_factory=dict)
    reproduce: str = ""  # one shell line that reproduces the VM


class Engine(abc.ABC):
    """One VM for one scenario run. Use as ``async with engine:``; ``stop`` always runs."""

    name: str = "engine"

    @abc.abstractmethod
    async def start(self) -> None:
        """Launch the VM and wait until the guest said HELLO."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Tear everything down; idempotent, never raises for a VM that is already gone."""

    async def note_hang(self, what: str) -> None:  # noqa: B027 (a hook: most see nothing)
        """Record in the run's artifacts what this engine can see of a step that did not
        finish (``what`` says which), before it is stopped: the engine's part of "why"."""

    async def __aenter__(self) -> Engine:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @abc.abstractmethod
    def resolve(self, region: str, offset: int, size: int) -> GuestRange:
        """Turn a region-relative range into guest-physical addresses."""

    # -- guest side ------------------------------------------------------------------------
    @abc.abstractmethod
    async def guest_write(self, rng: GuestRange, seed: int) -> None: ...

    @abc.abstractmethod
    async def guest_hash(self, rng: GuestRange) -> int: ...

    async def guest_convert(self, rng: GuestRange, private: bool) -> int:
        """Ask the guest to convert a range; returns the hypercall's return value verbatim."""
        raise UnsupportedStep(f"engine {self.name} cannot convert guest memory")

    async def guest_jobs(self, jobs: list[GuestJob]) -> list[JobResult]:
        """Run jobs on the vCPUs they name, all at the same time; results in order."""
        raise UnsupportedStep(f"engine {self.name} runs guest work on one vCPU only")

    # -- host side -------------------------------------------------------------------------
    async def host_read(self, rng: GuestRange) -> bytes:
        """A copy of the range as the host sees it (tests, small excerpts)."""
        raise UnsupportedStep(f"engine {self.name} cannot read guest memory from the host")

    async def host_hash(self, rng: GuestRange) -> HostHash:
        """The range hash of what the host sees: what ``host.read`` judges.

        Why apart from :meth:`host_read`: an engine that can reach the memory in place hashes
        it there at memory speed instead of copying hundreds of MiB first; this default
        hashes :meth:`host_read`'s copy.
        """
        data = await self.host_read(rng)
        return HostHash(await asyncio.to_thread(fasthash.hash_buffer, data), "copy")

    async def host_write(self, rng: GuestRange, data: bytes) -> None:
        raise UnsupportedStep(f"engine {self.name} cannot write guest memory from the host")

    async def gmem_punch_hole(self, rng: GuestRange) -> None:
        raise UnsupportedStep(f"engine {self.name} has no guest_memfd file to punch")

    async def gmem_allocate(self, rng: GuestRange) -> None:
        raise UnsupportedStep(f"engine {self.name} has no guest_memfd file to allocate")

    # -- VM lifecycle ----------------------------------------------------------------------
    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass while watching the VM: a VM that ends meanwhile raises at once
        (:class:`~qmpgmem.errors.VMExitedError`), not at the next step."""
        await asyncio.sleep(seconds)

    async def vm_stop(self) -> None:
        raise UnsupportedStep(f"engine {self.name} cannot pause the VM")

    async def vm_cont(self) -> None:
        raise UnsupportedStep(f"engine {self.name} cannot resume the VM")

    async def vm_reset(self) -> None:
        """Reset the VM; memory stays. A running VM's guest boots again before this returns;
        a paused VM stays paused, and its guest's restart completes in the next
        :meth:`vm_cont` (both engines; docs/scenarios.md)."""
        raise UnsupportedStep(f"engine {self.name} cannot reset the VM")

    async def qmp(self, command: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run a QMP command; returns ``{"return": ...}`` or ``{"error": {...}}``."""
        raise UnsupportedStep(f"engine {self.name} has no QMP monitor")

    async def wait_event(self, name: str, data: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise UnsupportedStep(f"engine {self.name} emits no QMP events")

    @property
    @abc.abstractmethod
    def artifacts(self) -> RunArtifacts: ...
