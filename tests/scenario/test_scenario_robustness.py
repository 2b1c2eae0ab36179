"""Files from anyone: every defect of issue 13's robustness list is an error at a line, exit 2.

Each test here failed on the loader before this file existed (a traceback, a hang, gigabytes,
or a file accepted that ``run`` then crashed on) and names the input that showed it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import click.testing
import pytest
from click.testing import CliRunner

from qmpgmem.cli.group import cli
from qmpgmem.scenario.loader import (
    InvalidScenarioError,
    ScenarioIssue,
    load_paths,
    load_scenario,
)
from qmpgmem.scenario.model import QmpCommand, WaitEvent
from qmpgmem.scenario.source import ALIAS_BUDGET, MAX_DEPTH

REPO = Path(__file__).resolve().parents[2]
SMOKE = (REPO / "scenarios" / "basic" / "smoke.yaml").read_text()


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def only_issue(path: Path) -> ScenarioIssue:
    with pytest.raises(InvalidScenarioError) as info:
        load_scenario(path)
    issues = info.value.issues
    assert len(issues) == 1, [str(i) for i in issues]
    return issues[0]


def validate(*paths: Path) -> click.testing.Result:
    """``qmpgmem validate``; a traceback would be a result with an exception."""
    result = CliRunner().invoke(cli, ["validate", *map(str, paths)])
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.output
    assert "Traceback" not in result.output
    return result


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


# -- aliases and nesting -----------------------------------------------------------------------


def billion_laughs(levels: int = 10, width: int = 10) -> str:
    """Each anchor a list of ``width`` aliases of the one before: width**levels strings."""
    lines = ["a0: &a0 [" + ", ".join(['"' + "lol" * 12 + '"'] * width) + "]"]
    for level in range(1, levels):
        items = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{items}]")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_in_little_time_and_memory(tmp_path: Path) -> None:
    text = billion_laughs()
    assert 900 <= len(text.encode()) <= 1024  # the issue's "1 KiB alias bomb"
    path = write(tmp_path, text)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        issue = only_issue(path)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 1.0 and peak < 100 << 20, (elapsed, peak)
    assert issue.type == "alias_budget" and issue.line is not None and issue.line > 1
    assert "aliases expand to more than" in issue.message
    result = validate(path)
    assert result.exit_code == 2 and f"{path}:{issue.line}:{issue.column}:" in result.output


def test_aliases_within_the_budget_still_work(tmp_path: Path) -> None:
    text = SMOKE.replace(
        "    range: {region: ram0, offset: 1M, size: 4M}\n    seed: 1",
        "    range: &r {region: ram0, offset: 1M, size: 4M}\n    seed: 1",
        1,
    ).replace("    range: {region: ram0, offset: 1M, size: 4M}", "    range: *r")
    text += "expect_trace:\n  - &ev {event: a, min_count: 0}\n  - {<<: *ev, event: b}\n"
    loaded = load_scenario(write(tmp_path, text))
    assert {step.range.offset for step in loaded.scenario.steps[:3]} == {1 << 20}  # type: ignore[union-attr]
    assert [t.event for t in loaded.scenario.expect_trace] == ["a", "b"]
    assert loaded.scenario.expect_trace[1].min_count == 0


def test_alias_budget_grows_with_the_file(tmp_path: Path) -> None:
    """A long file may alias as much as it writes: a range reused by many steps is fine."""
    count = ALIAS_BUDGET // 2  # each alias adds 5 values: 25,000 in all
    first = "  - action: guest.write\n    range: &r {region: ram0, size: 4K}\n    seed: 0\n"
    steps = "".join(f"  - {{action: guest.write, range: *r, seed: {i}}}\n" for i in range(count))
    path = write(tmp_path, SMOKE.split("steps:")[0] + "steps:\n" + first + steps)
    loaded = load_scenario(path)
    assert len(loaded.scenario.steps) == ALIAS_BUDGET // 2 + 1


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("flow.yaml", "name: x\nvm: " + "[" * 2000 + "]" * 2000 + "\n"),
        (
            "block.yaml",
            "name: x\nvm:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(600)),
        ),
        ("mixed.yaml", "name: x\nvm: " + "{a: [" * 300 + "]}" * 300 + "\n"),
        ("deep.json", '{"name": "x", "vm": ' + "[" * 2000 + "]" * 2000 + "}"),
    ],
)
def test_nesting_beyond_the_limit_is_an_error_at_a_line(
    tmp_path: Path, name: str, text: str
) -> None:
    path = write(tmp_path, text, name)
    issue = only_issue(path)
    assert issue.type == "too_deep" and f"nested more than {MAX_DEPTH} deep" in issue.message
    assert issue.line is not None and issue.line >= (2 if name != "deep.json" else 1)
    assert issue.field.startswith("vm")
    result = validate(path)
    assert result.exit_code == 2 and f"{path}:{issue.line}:{issue.column}: vm" in result.output


def test_alias_cannot_nest_beyond_the_limit(tmp_path: Path) -> None:
    deep = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    text = f"a: &a {deep}\nb: [[[[*a]]]]\n"
    issue = only_issue(write(tmp_path, text))
    assert (issue.type, issue.line) == ("too_deep", 2)


# -- values that are not JSON, or not what they claim ------------------------------------------


def test_int_tag_on_a_word(tmp_path: Path) -> None:
    text = SMOKE.replace("    seed: 1\n", "    seed: !!int x\n", 1)
    path = write(tmp_path, text)
    issue = only_issue(path)
    assert (issue.line, issue.field, issue.type) == (
        line_of(text, "!!int"),
        "steps[0].seed",
        "yaml_tag",
    )
    assert issue.message == "!!int 'x' is not an integer"
    assert validate(path).exit_code == 2


def test_400_digit_timeout(tmp_path: Path) -> None:
    text = SMOKE.replace("  step: 10s", "  step: " + "9" * 400)
    path = write(tmp_path, text)
    issue = only_issue(path)
    assert (issue.line, issue.column, issue.field) == (line_of(text, "999"), 9, "timeouts.step")
    assert "beyond 64 bits" in issue.message
    assert validate(path).exit_code == 2


def test_400_digit_timeout_as_a_string(tmp_path: Path) -> None:
    text = SMOKE.replace("  step: 10s", "  step: " + "9" * 400 + "s")
    issue = only_issue(write(tmp_path, text))
    assert issue.field == "timeouts.step" and "too large" in issue.message


@pytest.mark.parametrize("suffix", ["", "K"])
def test_5001_digit_size(tmp_path: Path, suffix: str) -> None:
    """Python refuses int() of more than 4300 digits; that was a ValueError traceback."""
    text = SMOKE.replace("size: 16M", "size: " + "1" * 5001 + suffix)
    path = write(tmp_path, text)
    issue = only_issue(path)
    assert (issue.line, issue.field) == (line_of(text, "1111"), "vm.memory[0].size")
    assert validate(path).exit_code == 2


@pytest.mark.parametrize(
    ("old", "new", "field"),
    [
        ("name: basic-smoke", 'name: "basic\\0smoke"', "name"),
        (
            "  machine: microvm",
            '  machine: microvm\n  qemu_args: ["-d", "in\\0t"]',
            "vm.qemu_args[1]",
        ),
        (
            "      backend: memfd\n      share: true",
            '      backend: file\n      path: "mem\\x00file"\n      share: true',
            "vm.memory[0].path",
        ),
        ("    seed: 1\n", '    seed: 1\n    name: "a\\u0000b"\n', "steps[0].name"),
    ],
)
def test_nul_bytes_are_refused_at_validation(
    tmp_path: Path, old: str, new: str, field: str
) -> None:
    """validate accepted them; run crashed in os.fsencode / subprocess (embedded null byte)."""
    text = SMOKE.replace(old, new, 1)
    assert text != SMOKE
    path = write(tmp_path, text)
    issue = only_issue(path)
    assert (issue.type, issue.field, issue.line) == ("nul", field, line_of(text, "\\"))
    assert validate(path).exit_code == 2


def test_nul_byte_in_json(tmp_path: Path) -> None:
    data = {
        "name": "a\u0000b",
        "description": "d",
        "vm": {"memory": [{"id": "ram0", "size": "16M"}]},
        "steps": [{"action": "vm.stop"}],
    }
    issue = only_issue(write(tmp_path, json.dumps(data, indent=1), "s.json"))
    assert (issue.type, issue.field, issue.line) == ("nul", "name", 2)


QMP_STEP = "  - action: qmp\n    command: query-status\n    arguments: {ARGS}\n"


def with_qmp_arguments(arguments: str) -> str:
    return SMOKE.replace("timeouts:", QMP_STEP.replace("{ARGS}", arguments) + "timeouts:")


def test_qmp_argument_date_stays_the_text_written(tmp_path: Path) -> None:
    """A YAML 1.1 timestamp became a datetime.date, which json.dumps refused during the run."""
    loaded = load_scenario(
        write(tmp_path, with_qmp_arguments("{when: 2024-01-01, at: 2001-12-14t21:59:43.10-05:00}"))
    )
    step = loaded.scenario.steps[-1]
    assert isinstance(step, QmpCommand)
    assert step.arguments == {"when": "2024-01-01", "at": "2001-12-14t21:59:43.10-05:00"}
    json.dumps(step.arguments)


@pytest.mark.parametrize(
    ("arguments", "tag"),
    [
        ("{b: !!binary aGVsbG8=}", "!!binary"),
        ("{t: !!timestamp 2024-01-01}", "!!timestamp"),
        ("{s: !!set {a, b}}", "!!set"),
        ("{o: !!omap [a: 1]}", "!!omap"),
        ("{x: !local thing}", "!local"),
    ],
)
def test_qmp_argument_that_json_cannot_carry_is_refused(
    tmp_path: Path, arguments: str, tag: str
) -> None:
    text = with_qmp_arguments(arguments)
    path = write(tmp_path, text)
    issue = only_issue(path)
    assert issue.type == "yaml_tag" and issue.message.startswith(f"tag {tag} ")
    assert issue.line == line_of(text, tag) and issue.field.startswith("steps[4].arguments.")
    assert validate(path).exit_code == 2


@pytest.mark.parametrize(
    ("value", "why"), [(".inf", "finite"), (".nan", "finite"), ("1: x", "string")]
)
def test_qmp_argument_other_non_json_values(tmp_path: Path, value: str, why: str) -> None:
    args = f"{{{value}}}" if ":" in value else f"{{x: {value}}}"
    issue = only_issue(write(tmp_path, with_qmp_arguments(args)))
    assert why in issue.message and issue.line is not None


def scenario_json(**extra: object) -> dict[str, object]:
    return {
        "name": "j",
        "description": "d",
        "vm": {"memory": [{"id": "ram0", "size": "16M"}]},
        "steps": [{"action": "vm.stop"}],
        **extra,
    }


def test_json_duplicate_keys_are_refused_as_in_yaml(tmp_path: Path) -> None:
    text = json.dumps(scenario_json(), indent=2)
    text = text.replace('  "name": "j",', '  "name": "j",\n  "name": "k",')
    path = write(tmp_path, text, "s.json")
    issue = only_issue(path)
    assert (issue.type, issue.line, issue.column) == ("duplicate_key", 3, 3)
    assert "duplicate key 'name' (first at line 2)" in issue.message
    yaml_issue = only_issue(write(tmp_path, "name: j\nname: k\n", "s.yaml"))
    assert yaml_issue.type == "duplicate_key"
    assert validate(path).exit_code == 2


def test_json_duplicate_keys_nested(tmp_path: Path) -> None:
    text = json.dumps(scenario_json()).replace('"size": "16M"', '"size": "16M", "size": "32M"')
    issue = only_issue(write(tmp_path, text, "s.json"))
    assert issue.type == "duplicate_key" and issue.field == "vm.memory[0].size"


@pytest.mark.parametrize("timeout", ["0", "0s", "0ms"])
def test_step_timeout_zero_is_refused(tmp_path: Path, timeout: str) -> None:
    """It silently became timeouts.step (``step.timeout or ...``)."""
    text = SMOKE.replace("    seed: 1\n", f"    seed: 1\n    timeout: {timeout}\n", 1)
    path = write(tmp_path, text)
    issue = only_issue(path)
    assert (issue.field, issue.line) == ("steps[0].timeout", line_of(text, "timeout:"))
    assert "> 0" in issue.message
    assert validate(path).exit_code == 2


def test_wait_event_timeout_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="greater than 0"):
        WaitEvent.model_validate({"action": "wait_event", "event": "STOP", "timeout": 0})


def test_negative_offset_is_named_an_offset(tmp_path: Path) -> None:
    text = SMOKE.replace("offset: 1M, size: 4M}\n    seed", "offset: -8, size: 4M}\n    seed", 1)
    issue = only_issue(write(tmp_path, text))
    assert issue.field == "steps[0].range.offset"
    assert issue.message == "offset cannot be negative, got -8"
    text = SMOKE.replace("size: 16M", "size: -4096")
    assert only_issue(write(tmp_path, text)).message == "size cannot be negative, got -4096"


# -- files -------------------------------------------------------------------------------------


def with_kernel(kernel: str) -> str:
    return SMOKE.replace(
        "  machine: microvm", f"  machine: microvm\n  guest:\n    kernel: {kernel}"
    )


def test_missing_kernel_is_reported_at_its_line(tmp_path: Path) -> None:
    text = with_kernel(str(tmp_path / "no-bzImage"))
    path = write(tmp_path, text)
    issue = only_issue(path)
    assert (issue.field, issue.line, issue.column) == (
        "vm.guest.kernel",
        line_of(text, "kernel:"),
        13,
    )
    assert issue.message == f"no such file: {tmp_path / 'no-bzImage'}"
    assert validate(path).exit_code == 2


def test_kernel_that_exists_passes(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"\0" * 16)
    loaded = load_scenario(write(tmp_path, with_kernel(str(kernel))))
    assert loaded.scenario.vm.guest.kernel == str(kernel)


def test_kernel_that_is_a_fifo_is_refused_without_opening_it(tmp_path: Path) -> None:
    fifo = tmp_path / "kernel.fifo"
    os.mkfifo(fifo)
    issue = only_issue(write(tmp_path, with_kernel(str(fifo))))
    assert issue.field == "vm.guest.kernel" and "not a regular file (a FIFO)" in issue.message


def test_fifo_as_scenario_file_is_refused_without_hanging(tmp_path: Path) -> None:
    """validate blocked in open() forever, waiting for a writer."""
    fifo = tmp_path / "s.yaml"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "qmpgmem", "validate", str(fifo)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert f"{fifo}: not a regular file (a FIFO); not read" in result.stdout
    assert "Traceback" not in result.stderr


def test_character_device_is_refused(tmp_path: Path) -> None:
    issue = only_issue(Path("/dev/zero"))
    assert issue.type == "file" and "not a regular file (a character device)" in issue.message


def test_not_utf8_is_an_error_at_a_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(SMOKE.encode().replace(b"basic-smoke", b"basic-\xffsmoke"))
    issue = only_issue(path)
    assert (issue.type, issue.line, issue.column) == ("encoding", line_of(SMOKE, "name:"), 13)


def test_one_bad_file_does_not_stop_its_directory(tmp_path: Path) -> None:
    """A traceback in one file used to end validate before the files after it."""
    (tmp_path / "a-deep.yaml").write_text("vm: " + "[" * 1000 + "]" * 1000 + "\n")
    (tmp_path / "b-int.yaml").write_text(SMOKE.replace("seed: 1\n", "seed: !!int x\n", 1))
    (tmp_path / "c-size.yaml").write_text(SMOKE.replace("size: 16M", "size: " + "1" * 5001))
    (tmp_path / "d-good.yaml").write_text(SMOKE)
    loaded, issues = load_paths([tmp_path])
    assert [item.path.name for item in loaded] == ["d-good.yaml"]
    assert sorted({issue.file.name for issue in issues}) == [
        "a-deep.yaml",
        "b-int.yaml",
        "c-size.yaml",
    ]
    assert all(issue.line is not None for issue in issues)
    result = validate(tmp_path)
    assert result.exit_code == 2
    assert "3 problems in 3 files; 1 scenario valid" in result.output


# -- size of the input -------------------------------------------------------------------------


def many_steps(count: int) -> str:
    head = SMOKE.split("steps:")[0]
    step = (
        "  - action: guest.write\n    range: {region: ram0, offset: 1M, size: 4K}\n    seed: %d\n"
    )
    return head + "steps:\n" + "".join(step % i for i in range(count)) + "timeouts:\n  step: 10s\n"


def test_many_steps_load_with_their_lines(tmp_path: Path) -> None:
    """A sanity bound only (the figures are in bench/validate.py): 6,000 steps took 11 s."""
    path = write(tmp_path, many_steps(6000))
    started = time.perf_counter()
    loaded = load_scenario(path)
    elapsed = time.perf_counter() - started
    assert len(loaded.scenario.steps) == 6000
    assert loaded.step_lines[:2] == [17, 20] and loaded.step_end_lines[-1] == 17 + 3 * 6000 - 1
    assert elapsed < 30, elapsed


def _load_cpu_seconds(path: Path) -> float:
    started = time.process_time()
    load_scenario(path)
    return time.process_time() - started


def test_large_description_loads_in_linear_time(tmp_path: Path) -> None:
    """ruamel's pure-Python scanner once took 5 s for 20 MiB of description and 43 s for 50
    MiB (superlinear); bench/validate.py has the figures. Four times the text must cost well
    under sixteen times the CPU (quadratic), measured in this process's CPU time so other
    load on the machine does not decide it."""

    def scenario(mib: int) -> Path:
        text = SMOKE.replace("description: >\n", "description: >\n  " + "x" * (mib << 20) + "\n", 1)
        return write(tmp_path, text, f"{mib}.yaml")

    small, large = scenario(5), scenario(20)
    assert len(load_scenario(large).scenario.description) > 20 << 20
    ratio = _load_cpu_seconds(large) / max(_load_cpu_seconds(small), 1e-3)
    assert ratio < 8, f"20 MiB cost {ratio:.1f}x the CPU of 5 MiB (linear: 4x)"


def test_file_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    with path.open("wb") as stream:
        stream.truncate((64 << 20) + 1)
    issue = only_issue(path)
    assert issue.type == "file" and "larger than 64 MiB" in issue.message
