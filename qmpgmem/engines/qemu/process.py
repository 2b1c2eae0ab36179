"""The QEMU child process: private run directory, socketpair channels, guaranteed teardown.

Why this shape (after QEMU's own python/qemu/machine): QMP and the guest's serial port are
handed to QEMU as already-connected socketpair fds, so there is no socket path to race on or
leave behind; QEMU runs in its own process group with a parent-death signal, so neither a
crashed runner nor a SIGKILL leaves it orphaned; ``stop()`` is idempotent and always ends with
the process reaped and the run directory removed (unless asked to keep it).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import logging
import os
import shlex
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path

from qmpgmem.errors import VMLaunchError
from qmpgmem.rundir import make_run_dir

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """In the child between fork and exec: SIGKILL it when the parent (the runner) dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def dying_with_parent(argv: list[str]) -> tuple[list[str], Callable[[], None] | None]:
    """The command line and ``preexec_fn`` that start ``argv`` so that it gets SIGKILL when
    the process that started it dies: ``setpriv --pdeathsig KILL -- argv`` when util-linux's
    setpriv is installed, else ``argv`` with :func:`die_with_parent`.

    Why setpriv first: a ``preexec_fn`` makes Python fork the whole runner (tens of MiB of
    page tables) for every QEMU it starts, about 4.5 ms of the runner's single event loop
    per launch; without one it spawns with vfork (about 0.4 ms), and setpriv sets the same
    parent-death signal before it execs ``argv`` (which keeps it).

    :raise OSError: ``argv[0]`` cannot be executed, as ``exec`` would have said it; behind
        setpriv it would otherwise be only setpriv's exit status 127.
    """
    setpriv = _setpriv_path()
    if setpriv is None:
        return list(argv), die_with_parent
    _check_executable(argv[0])
    return [setpriv, "--pdeathsig", "KILL", "--", *argv], None


@functools.cache
def _setpriv_path() -> str | None:
    return shutil.which("setpriv")


def _check_executable(program: str) -> None:
    path = program if "/" in program else shutil.which(program)
    if path is None:
        raise FileNotFoundError(errno.ENOENT, "not found on PATH", program)
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
    if os.path.isdir(path) or not os.access(path, os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)


def describe_returncode(rc: int | None) -> str:
    """``QEMU was killed by SIGKILL`` for -9, ``QEMU exited (status 1)`` for 1."""
    if rc is None:
        return "QEMU is still running"
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        return f"QEMU was killed by {name}"
    return f"QEMU exited (status {rc})"


class QemuProcess:
    """One QEMU process with its QMP and guest-channel sockets and its run directory.

    ``argv_fn`` receives the fds QEMU inherits (``qmp_fd``, ``serial_fd``) and the run
    directory, and returns the full argv; the argv builder stays pure and testable.
    """

    def __init__(self, run_dir_parent: Path | None = None, keep_run_dir: bool = False) -> None:
        self.run_dir = make_run_dir("run", run_dir_parent)
        self.keep_run_dir = keep_run_dir
        self.argv: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.qmp_sock, self._qmp_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.serial_sock, self._serial_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._log_file = self.run_dir / "qemu.log"
        self._stopped = False

    @property
    def qmp_fd(self) -> int:
        return self._qmp_child.fileno()

    @property
    def serial_fd(self) -> int:
        return self._serial_child.fileno()

    def paused_monitor_argv(self, binary: str) -> list[str]:
        """A QEMU that starts paused with no devices and its QMP monitor on our socketpair.

        For short-lived QEMUs that only answer QMP (the probe, flavour checks); the caller
        appends what it wants to ask about.
        """
        return [
            binary, "-S", "-nodefaults", "-display", "none",
            "-chardev", f"socket,id=qmp,fd={self.qmp_fd}",
            "-mon", "chardev=qmp,mode=control",
        ]  # fmt: skip

    @property
    def log_path(self) -> Path:
        return self._log_file

    def output(self) -> str:
        """What QEMU printed on stdout and stderr so far."""
        try:
            return self._log_file.read_text(errors="replace")
        except OSError:
            return ""

    async def launch(self, argv: list[str], extra_fds: tuple[int, ...] = ()) -> None:
        """Start QEMU in the run directory (its working directory: relative paths of QEMU's
        stay inside it), with the QMP and serial fds and ``extra_fds`` inherited."""
        self.argv = list(argv)
        (self.run_dir / "argv.txt").write_text(shlex.join(argv) + "\n")
        log.debug("launching %s", shlex.join(argv))
        with open(self._log_file, "wb") as out:
            try:
                command, preexec_fn = dying_with_parent(argv)
                self.proc = await asyncio.create_subprocess_exec(
                    *command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    pass_fds=(self.qmp_fd, self.serial_fd, *extra_fds),
                    cwd=self.run_dir,
                    process_group=0,
                    preexec_fn=preexec_fn,
                )
            except OSError as exc:
                raise VMLaunchError(f"cannot execute {argv[0]}: {exc}", argv) from exc
        # QEMU holds its own copies now; ours would keep the channels open after QEMU dies.
        self._qmp_child.close()
        self._serial_child.close()

    @property
    def returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def describe_exit(self) -> str:
        """How QEMU ended, as the start of a sentence: ``QEMU was killed by SIGKILL``,
        ``QEMU exited (status 1)``, or ``QEMU is still running``.

        Why the signal by name: a QEMU that an OOM killer, a test or an assertion (SIGABRT)
        ended reads differently from one that exited on its own, and asyncio reports a
        signal as a negative status that nobody should have to decode.
        """
        return describe_returncode(self.returncode)

    async def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        return await asyncio.wait_for(self.proc.wait(), timeout)

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    async def terminate(self, grace: float = 2.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; reaps the process."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
        except TimeoutError:
            self._signal_group(signal.SIGKILL)
            await self.proc.wait()
        # The group may hold helpers (none today); make sure nothing of it survives.
        self._signal_group(signal.SIGKILL)

    def kill_now(self) -> None:
        """Synchronous last resort (atexit, signal handlers): SIGKILL the whole group."""
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)

    async def close(self) -> None:
        """Idempotent teardown: process reaped, sockets closed, run dir removed unless kept."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.proc is not None and self.proc.returncode is None:
                await self.terminate()
        finally:
            for s in (self.qmp_sock, self.serial_sock, self._qmp_child, self._serial_child):
                s.close()
            if not self.keep_run_dir:
                shutil.rmtree(self.run_dir, ignore_errors=True)
