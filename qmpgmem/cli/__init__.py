"""The ``qmpgmem`` command line: a click group whose commands live one per module.

``main`` comes from :mod:`qmpgmem.cli.entry`, which installs the signal handlers before the
commands are imported; ``cli`` (the click group) is imported on first use.
"""

from typing import Any

from qmpgmem.cli.entry import main

__all__ = ["cli", "main"]


def __getattr__(name: str) -> Any:
    if name == "cli":
        from qmpgmem.cli.group import cli

        return cli
    raise AttributeError(name)
