"""The ``qmpgmem`` command line: a click group whose commands live one per module."""

from qmpgmem.cli.main import cli, main

__all__ = ["cli", "main"]
