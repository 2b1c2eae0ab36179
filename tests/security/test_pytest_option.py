"""The pytest plugin applies the same trust model: ``--qmpgmem-allow-unsafe`` is the opt-in,
and names reach the terminal with their control characters escaped."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary")]


def _pmemsave(target: Path) -> str:
    return f"""\
name: pmemsave-outside
description: writes guest memory to a host file outside the run directory
vm:
  memory: [{{id: m0, size: 4M}}]
steps:
  - action: qmp
    command: pmemsave
    arguments: {{val: 0, size: 4096, filename: "{target}"}}
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--qmpgmem", "-p", "no:cacheprovider", *args)


def test_unsafe_steps_error_without_the_option_and_run_with_it(pytester: pytest.Pytester) -> None:
    target = pytester.path / "outside.bin"
    pytester.makefile(".yaml", scenario=_pmemsave(target))
    res = run(pytester)
    res.assert_outcomes(errors=1)
    res.stdout.fnmatch_lines(["*scenario.yaml:6: error: step 1: (*scenario.yaml:6) qmp pmemsave*"])
    assert not target.exists()
    res = run(pytester, "--qmpgmem-allow-unsafe")
    res.assert_outcomes(passed=1)
    res.stdout.fnmatch_lines(["*--qmpgmem-allow-unsafe: scenario files are code*"])
    assert target.exists() and target.stat().st_size == 4096


def test_control_characters_of_a_name_are_escaped(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".yaml",
        evil='name: "evil\\e[2K\\rPASSED"\ndescription: terminal control in the name\n'
        "vm:\n  memory: [{id: m0, size: 4M}]\nsteps:\n  - action: guest.write\n"
        "    range: {region: m0, size: 4K}\n    seed: 1\n  - action: guest.verify\n"
        "    range: {region: m0, size: 4K}\n    expect: {pattern: 2}\n",
    )
    res = run(pytester, "-rA")
    res.assert_outcomes(failed=1)
    out = res.stdout.str() + res.stderr.str()
    assert "\x1b[2K" not in out and "\r" not in out
    assert "evil\\x1b[2K\\rPASSED[" in out
