"""The ``qmpgmem`` click group, logging setup and the error-to-exit-code mapping.

Why one group with commands in their own modules: each command module registers itself with
``@cli.command()`` and is imported at the bottom of this file, so adding a command is one
import line. User errors (a bad scenario, a missing tool) print one clean message and exit 2;
only bugs show a traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from qmpgmem import __version__
from qmpgmem.errors import QmpgmemError, ScenarioError, SetupError

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "cli"]

EXIT_OK = 0
#: Something ran and did not pass (a failed scenario, an engine error).
EXIT_FAILED = 1
#: The user must fix something first: bad arguments, an invalid scenario, a missing tool.
EXIT_USAGE = 2

EPILOG = """\b
A typical session:
  qmpgmem probe                  what this host can run (KVM, guest_memfd, QEMU)
  qmpgmem validate scenarios/    check scenario files without running them
  qmpgmem run scenarios/basic    run scenarios and report what guest and host saw
\b
Scenario format: docs/scenarios.md; JSON Schema for editors: qmpgmem schema.
"""


class QmpgmemGroup(click.Group):
    """A click group that turns qmpgmem's own errors into a message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (ScenarioError, SetupError) as exc:
            _fail(exc, EXIT_USAGE)
        except QmpgmemError as exc:
            _fail(exc, EXIT_FAILED)


def _fail(exc: QmpgmemError, code: int) -> None:
    click.echo(f"error: {exc}", err=True)
    raise click.exceptions.Exit(code)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    logging.getLogger("qmpgmem").setLevel(level)
    # qemu.qmp logs its own errors ("Failed to receive Greeting") before ours says the same
    # in one sentence; show its chatter only with -vv.
    logging.getLogger("qemu.qmp").setLevel(logging.DEBUG if verbose >= 2 else logging.CRITICAL)


@click.group(
    cls=QmpgmemGroup,
    epilog=EPILOG,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="qmpgmem")
@click.option("-v", "--verbose", count=True, help="Log more to stderr (-v: info, -vv: debug).")
def cli(verbose: int) -> None:
    """Test guest_memfd-backed virtual machines against scenario files.

    A scenario (YAML) describes a VM and steps; qmpgmem boots its micro guest under QEMU or
    KVM directly, runs the steps, and checks what guest and host see.
    """
    _setup_logging(verbose)


# Command modules register themselves on ``cli``; add a command by adding its import here.
from qmpgmem.cli import aggregate, compare, contract, fuzz, image, lab, probe, run, schema, validate  # noqa: E402, F401
