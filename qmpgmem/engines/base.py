"""What every engine offers the runner: start a VM, run primitive operations, stop it.

Why primitives and not steps: the runner owns the scenario semantics (which expectation a
step has, what the model predicts); an engine only knows how to make the guest or the host
do one thing and report what it saw. An engine that cannot do an operation here raises
:class:`~qmpgmem.errors.UnsupportedStep` with the reason, which the runner turns into a skip.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmpgmem.errors import UnsupportedStep


@dataclass(frozen=True)
class GuestRange:
    """A scenario range resolved to guest-physical addresses."""

    region: str
    offset: int  # from the region's start; the pattern is a function of it
    size: int
    gpa: int  # guest-physical address of ``offset``


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

    # -- host side -------------------------------------------------------------------------
    async def host_read(self, rng: GuestRange) -> bytes:
        raise UnsupportedStep(f"engine {self.name} cannot read guest memory from the host")

    async def host_write(self, rng: GuestRange, data: bytes) -> None:
        raise UnsupportedStep(f"engine {self.name} cannot write guest memory from the host")

    async def gmem_punch_hole(self, rng: GuestRange) -> None:
        raise UnsupportedStep(f"engine {self.name} has no guest_memfd file to punch")

    async def gmem_allocate(self, rng: GuestRange) -> None:
        raise UnsupportedStep(f"engine {self.name} has no guest_memfd file to allocate")

    # -- VM lifecycle ----------------------------------------------------------------------
    async def vm_stop(self) -> None:
        raise UnsupportedStep(f"engine {self.name} cannot pause the VM")

    async def vm_cont(self) -> None:
        raise UnsupportedStep(f"engine {self.name} cannot resume the VM")

    async def vm_reset(self) -> None:
        raise UnsupportedStep(f"engine {self.name} cannot reset the VM")

    async def qmp(self, command: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run a QMP command; returns ``{"return": ...}`` or ``{"error": {...}}``."""
        raise UnsupportedStep(f"engine {self.name} has no QMP monitor")

    async def wait_event(self, name: str, data: dict[str, Any], timeout: float) -> dict[str, Any]:
        raise UnsupportedStep(f"engine {self.name} emits no QMP events")

    @property
    @abc.abstractmethod
    def artifacts(self) -> RunArtifacts: ...
