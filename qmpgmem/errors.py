"""The error tree of qmpgmem.

Every error the tool raises on purpose derives from :class:`QmpgmemError`; anything else is
a bug. The CLI maps the tree to exit codes::

    QmpgmemError
     +-- ScenarioError          a scenario file is invalid (exit 2)
     +-- SetupError             the host lacks something the tool itself needs (exit 2)
     +-- EngineError            the VM or the harness broke during a run (status "error")
     |    +-- VMLaunchError     QEMU (or the KVM VM) could not be started
     |    +-- VMExitedError     QEMU exited while a step was running
     |    +-- GuestProtocolError  the guest answered something the protocol does not allow
     +-- UnsupportedStep        an engine cannot run a step here (status "skipped")
"""

from __future__ import annotations


class QmpgmemError(Exception):
    """Root of all errors qmpgmem raises on purpose."""


class ScenarioError(QmpgmemError):
    """A scenario file does not parse or does not validate."""


class SetupError(QmpgmemError):
    """The host lacks something qmpgmem itself needs (a QEMU binary, the guest toolchain)."""


class EngineError(QmpgmemError):
    """The VM or the harness broke while running a scenario."""


class VMLaunchError(EngineError):
    """The VM could not be started; carries the command and what it printed."""

    def __init__(self, message: str, argv: list[str] | None = None, output: str = "") -> None:
        super().__init__(message)
        self.argv = argv or []
        self.output = output

    def __str__(self) -> str:
        text = super().__str__()
        if self.output.strip():
            tail = "\n".join(self.output.strip().splitlines()[-5:])
            text += f"\n  QEMU said: {tail}"
        return text


class VMExitedError(EngineError):
    """The VM process exited while the run still needed it."""

    def __init__(self, message: str, returncode: int | None = None, output: str = "") -> None:
        super().__init__(message)
        self.returncode = returncode
        self.output = output


class GuestProtocolError(EngineError):
    """The guest answered something the guest protocol does not allow."""


class UnsupportedStep(QmpgmemError):
    """An engine cannot run this step on this host; the message is the skip reason."""
