"""The process entry point: how a qmpgmem command ends, whatever signal arrives when.

Why here and first: importing the commands takes a few hundred milliseconds; a Ctrl-C or a
CI's SIGTERM in that window used to print a KeyboardInterrupt traceback, click's "Aborted!"
with exit 1, or kill the process outright. The handlers are installed before anything heavy
is imported, SIGTERM and SIGHUP are made to interrupt like Ctrl-C, and only the first signal
interrupts: a second one while teardown runs is recorded and ignored, so the teardown that
stops QEMU and removes run directories is never cut short. Whatever a command could not
clean up when interrupted, the exit path here removes (the run directories this process
made), then exits 130.

A handler that raises can land inside code Python does not let exceptions out of (a weakref
callback of the import machinery, a ``__del__``): the exception is then "ignored" with a
traceback on stderr and the command would carry on. The unraisable hook installed with the
handlers catches exactly that case and delivers the same signal again, outside the callback.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

__all__ = [
    "EXIT_INTERRUPTED",
    "Interrupted",
    "exit_interrupted",
    "first_signal",
    "install_handlers",
    "main",
    "note_signal",
]

EXIT_INTERRUPTED = 130
INTERRUPTING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_received: list[str] = []


class Interrupted(KeyboardInterrupt):
    """A signal interrupted the command; ``args[0]`` is its name (``SIGTERM``)."""


def first_signal() -> str | None:
    """The name of the first interrupting signal this process received, if any."""
    return _received[0] if _received else None


def note_signal(name: str) -> bool:
    """Record a signal; True when it is the first (the one that interrupts)."""
    _received.append(name)
    return len(_received) == 1


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if note_signal(signal.Signals(signum).name):
        raise Interrupted(signal.Signals(signum).name)


def install_handlers() -> None:
    """SIGINT, SIGTERM and SIGHUP interrupt once (the event loop of ``run`` takes them over
    while it runs, and hands them back with this)."""
    for sig in INTERRUPTING:
        signal.signal(sig, _on_signal)
    if sys.unraisablehook is not _redeliver_swallowed:
        global _previous_unraisablehook
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _redeliver_swallowed


_previous_unraisablehook = sys.unraisablehook


def _redeliver_swallowed(unraisable: sys.UnraisableHookArgs) -> None:
    """Our Interrupted raised where it cannot propagate: forget it and send the signal again,
    so it interrupts at the next point that can take it (silently: nothing was done yet)."""
    exc = unraisable.exc_value
    if not isinstance(exc, Interrupted) or not exc.args or _received[:1] != [exc.args[0]]:
        _previous_unraisablehook(unraisable)
        return
    del _received[0]
    # later, from another thread: os.kill here (or anything that waits in this hook) would
    # run the handler inside the hook at once
    again = threading.Timer(0.01, os.kill, (os.getpid(), signal.Signals[exc.args[0]]))
    again.daemon = True
    again.start()


def _ignore_signals() -> None:
    for sig in INTERRUPTING:
        signal.signal(sig, signal.SIG_IGN)


def exit_interrupted(detail: str = "") -> None:
    """End the process after an interruption: no signal can cut this short; the run
    directories this process still owns are removed; one line on stderr; exit 130."""
    _ignore_signals()
    from qmpgmem.rundir import remove_own_run_dirs

    removed = remove_own_run_dirs()
    parts = [detail] if detail else []
    if removed:
        parts.append(f"removed {len(removed)} run director{'y' if len(removed) == 1 else 'ies'}")
    with _quiet_pipe():
        print(
            f"interrupted ({first_signal() or 'SIGINT'}): " + ("; ".join(parts) or "stopped"),
            file=sys.stderr,
        )
    _exit(EXIT_INTERRUPTED)


class _quiet_pipe:
    """Swallow a closed stdout/stderr while the process ends."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, _value: object, _tb: object) -> bool:
        return kind is BrokenPipeError or kind is ValueError


#: Set by :func:`main` when it is the process's entry point (the console script,
#: ``python -m``): only then may it leave without interpreter finalization.
_OWNS_PROCESS = False


def _exit(code: int) -> None:
    """Leave now, with ``code``: output flushed, logs closed, no interpreter finalization
    (during which Python puts the default handlers back, so a late SIGTERM would kill the
    process instead of being ignored). Every command has stopped its VMs by the time it
    returns, so nothing is left for finalizers to do. Called from Python with an explicit
    argv (a test, a wrapper), it raises SystemExit instead, so its caller carries on."""
    if not _OWNS_PROCESS:
        raise SystemExit(code)
    for stream in (sys.stdout, sys.stderr):
        with _quiet_pipe():
            stream.flush()
    logging.shutdown()
    os._exit(code)


def _run_cli(argv: Sequence[str] | None) -> int:
    import click

    from qmpgmem.cli.group import cli

    try:
        code = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="qmpgmem",
            standalone_mode=False,
        )
    except click.Abort as exc:  # click's word for a KeyboardInterrupt it caught
        raise KeyboardInterrupt from exc
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    return code if isinstance(code, int) else 0


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether our Interrupted is in ``exc``'s chain of causes: Python wraps an exception
    raised in some places into another, e.g. one raised in a ``__set_name__`` while a class
    body of an imported module is being made becomes a RuntimeError (seen with a SIGINT
    during the import of pydantic on a loaded machine)."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, Interrupted):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``qmpgmem = qmpgmem.cli:main``); ``argv`` given: a call
    from Python, which ends in SystemExit rather than leaving the process."""
    global _OWNS_PROCESS
    _OWNS_PROCESS = argv is None
    previous = {sig: signal.getsignal(sig) for sig in INTERRUPTING}
    install_handlers()  # before the commands are imported: they take a while
    try:
        try:
            code = _run_cli(argv)
        except KeyboardInterrupt:
            exit_interrupted()
            return
        except Exception as exc:
            if not _caused_by_interrupt(exc):
                raise
            exit_interrupted()
            return
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            if exc.code is not None and not isinstance(exc.code, int):
                with _quiet_pipe():
                    print(exc.code, file=sys.stderr)
        except BrokenPipeError:
            code = 141
        _exit(code)
    finally:  # reached only by a call from Python: give its handlers back
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sys.unraisablehook = _previous_unraisablehook
        _received.clear()
