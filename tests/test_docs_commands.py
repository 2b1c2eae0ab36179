"""Every qmpgmem command line in the CI and running docs parses with today's CLI.

Why: docs/ci.md is copied into Jenkinsfiles and pipelines; an option renamed in the code
must fail here, not in someone's nightly job.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from qmpgmem.cli.group import cli

DOCS = Path(__file__).resolve().parents[1] / "docs"
_COMMAND = re.compile(
    r"(?<![\w-])qmpgmem ((?:run|probe|validate|kernel-contract|lab run|compare|aggregate)\b.*)"
)


def command_lines(text: str) -> list[str]:
    """qmpgmem command lines in the fenced code blocks (synopses with ``[...]`` left out)."""
    blocks = re.findall(r"^ *```[^\n]*\n(.*?)^ *```", text, flags=re.S | re.M)
    joined = re.sub(r"\\\n\s*", " ", "\n".join(blocks))  # shell line continuations
    out = []
    for line in joined.splitlines():
        m = _COMMAND.search(line)
        if not m or "[" in m.group(1) or "..." in m.group(1) or "#" in line[: m.start()]:
            continue
        command = re.split(r" #| [>|] ", m.group(1))[0].strip()
        for quote in "'\"":
            if command.count(quote) % 2:  # the end of a string the command sits in
                command = command[: command.rindex(quote)].strip()
        out.append(command)
    return out


@pytest.mark.parametrize("doc", ["docs/ci.md", "docs/running.md", "docs/fleet.md", "README.md"])
def test_documented_commands_parse(doc: str) -> None:
    lines = command_lines((DOCS.parent / doc).read_text())
    assert len(lines) >= (10 if doc == "docs/ci.md" else 1), lines
    for line in lines:
        args = shlex.split(line.replace("${env.HOST_CLASS}", "x"))
        name, rest = args[0], args[1:]
        command = cli.get_command(click.Context(cli), name)
        assert command is not None, line
        if isinstance(command, click.Group):  # lab run
            command, rest = command.get_command(click.Context(command), rest[0]), rest[1:]
            assert command is not None, line
        command.make_context(name, list(rest))  # parses; raises on an unknown option


def test_a_renamed_option_fails_the_check() -> None:
    command = cli.get_command(click.Context(cli), "run")
    assert command is not None
    with pytest.raises(click.NoSuchOption):
        command.make_context("run", ["scenarios/", "--expected-skips", "x.yaml"])
