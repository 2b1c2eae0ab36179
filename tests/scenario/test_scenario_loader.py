"""Loading files: every problem comes back as FILE:LINE:COL: field: message."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from qmpgmem.errors import ScenarioError
from qmpgmem.scenario.loader import (
    InvalidScenarioError,
    LoadedScenario,
    ScenarioIssue,
    load_paths,
    load_scenario,
)
from qmpgmem.scenario.model import GuestWrite, HostRead

GOOD = """\
name: good
description: a valid scenario
vm:
  memory:
    - id: ram0
      size: 16M
steps:
  - action: guest.write
    range: {region: ram0, offset: 1M, size: 4K}
    seed: 0x10

  # a comment between steps
  - action: host.read
    name: look
    range:
      region: ram0
      size: 4K
      offset: 1M
    expect: {pattern: 16}
timeouts:
  step: 5s
"""


def write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def issues_of(path: Path) -> list[ScenarioIssue]:
    with pytest.raises(InvalidScenarioError) as info:
        load_scenario(path)
    assert isinstance(info.value, ScenarioError)
    assert info.value.issues
    return info.value.issues


def test_load_good(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    loaded = load_scenario(path)
    assert isinstance(loaded, LoadedScenario)
    assert loaded.path == path and loaded.text == GOOD
    first, second = loaded.scenario.steps
    assert isinstance(first, GuestWrite) and first.seed == 16 and first.range.offset == 1 << 20
    assert isinstance(second, HostRead) and second.name == "look"
    assert loaded.step_lines == [8, 13]
    assert loaded.step_source(0) == (
        " 8 |   - action: guest.write\n"
        " 9 |     range: {region: ram0, offset: 1M, size: 4K}\n"
        "10 |     seed: 0x10"
    )
    assert loaded.step_source(1, numbered=False).splitlines() == GOOD.splitlines()[12:19]


@pytest.mark.parametrize(
    ("text", "line", "column", "field", "message"),
    [
        (
            GOOD.replace("seed: 0x10", "seed: 1\n    sed: 2"),
            11,
            5,
            "steps[0].sed",
            "unknown key 'sed'; did you mean 'seed'?",
        ),
        (
            GOOD.replace("      offset: 1M\n", "      ofset: 1M\n"),
            18,
            7,
            "steps[1].range.ofset",
            "unknown key 'ofset'; did you mean 'offset'?",
        ),
        (
            GOOD.replace("size: 16M", "size: 16M\n      speed: 9"),
            7,
            7,
            "vm.memory[0].speed",
            "unknown key 'speed'; valid keys: id, size, backend, flavour, share, path, "
            "existing, keep, gmem_flags",
        ),
        (
            GOOD.replace("      size: 4K\n", "      size: abc\n"),
            17,
            13,
            "steps[1].range.size",
            "expected a size like 4K, 2M or an integer, got 'abc'",
        ),
        (
            GOOD.replace("guest.write", "guest.wrte"),
            8,
            5,
            "steps[0]",
            "unknown action 'guest.wrte'; did you mean 'guest.write'?",
        ),
        (
            GOOD.replace("guest.write", "frobnicate"),
            8,
            5,
            "steps[0]",
            "unknown action 'frobnicate'; valid actions: guest.write, guest.verify, guest.convert, "
            "guest.parallel, host.read, host.write, host.gmem_punch_hole, host.gmem_allocate, "
            "qmp, vm.stop, vm.cont, vm.reset, wait_event, sleep",
        ),
        (
            GOOD.replace(
                "  - action: guest.write\n", "  - range: {region: ram0, size: 8}\n    action_: x\n"
            ).replace("    range: {region: ram0, offset: 1M, size: 4K}\n", "", 1),
            8,
            5,
            "steps[0]",
            "missing key 'action'; valid actions: guest.write",
        ),
        (
            GOOD.replace("{pattern: 16}", "zeroo"),
            19,
            13,
            "steps[1].expect",
            "expected 'zero' or 'unchanged', got 'zeroo'",
        ),
        (
            GOOD.replace("{pattern: 16}", "{pattern: -1}"),
            19,
            23,
            "steps[1].expect.pattern",
            "expected a value >= 0, got -1",
        ),
        (
            GOOD.replace("region: ram0, offset", "region: ram1, offset"),
            9,
            21,
            "steps[0].range.region",
            "no region 'ram1'; vm.memory has 'ram0'",
        ),
        (
            GOOD.replace("      size: 4K\n", "      size: 16M\n"),
            17,
            13,
            "steps[1].range.size",
            "the range ends at 17M, past the end of region 'ram0' (16M); at most 15M fits",
        ),
        (
            GOOD.replace("description: a valid scenario\n", ""),
            1,
            1,
            "description",
            "missing required key 'description'",
        ),
        (
            GOOD.replace("  step: 5s", "  step: soon"),
            21,
            9,
            "timeouts.step",
            "expected a duration like 500ms, 2s, 1m or a number of seconds, got 'soon'",
        ),
        (
            GOOD.replace("vm:\n", "requires: [kvm, 'qemu>=eleven']\nvm:\n"),
            3,
            17,
            "requires[1]",
            "expected a capability like 'guest_memfd'",
        ),
        (
            GOOD.replace("vm:\n", "vm:\n  qemu_args: -d int\n"),
            4,
            14,
            "vm.qemu_args",
            "qemu_args is a list with one argv word per item",
        ),
        (
            GOOD.replace("    seed: 0x10\n", "    seed: 0x10\n  - 42\n"),
            11,
            5,
            "steps[1]",
            "expected a mapping (key: value), got 42",
        ),
    ],
)
def test_issue_location_and_message(
    tmp_path: Path, text: str, line: int, column: int, field: str, message: str
) -> None:
    path = write(tmp_path, text)
    issues = issues_of(path)
    assert len(issues) == 1, [str(i) for i in issues]
    (issue,) = issues
    assert (issue.file, issue.line, issue.column, issue.field) == (path, line, column, field)
    assert issue.message.startswith(message), issue.message
    assert str(issue) == f"{path}:{line}:{column}: {field}: {issue.message}"
    assert str(issue).startswith(f"{path}:{line}:")


def test_several_issues_sorted_by_line(tmp_path: Path) -> None:
    # steps before vm in the file: pydantic reports vm first, the user reads top-down
    text = """\
name: order
description: d
steps:
  - action: sleep
    seconds: x
vm:
  memory:
    - {id: ram0, size: 16M, colour: red}
"""
    issues = issues_of(write(tmp_path, text))
    assert [(i.line, i.field) for i in issues] == [
        (5, "steps[0].seconds"),
        (8, "vm.memory[0].colour"),
    ]


def test_error_str_joins_issues(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("seed: 0x10", "seed: x"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}:10:11: steps[0].seed: expected an integer, got 'x'"


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    (issue,) = issues_of(write(tmp_path, "name: x\nvm: [\n  memory: 1\n"))
    assert issue.type == "yaml_syntax" and issue.line is not None and issue.line >= 2
    assert issue.message.startswith("invalid YAML")


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    (issue,) = issues_of(write(tmp_path, GOOD.replace("description:", "name: again\ndescription:")))
    assert issue.line == 2 and "duplicate key" in issue.message


@pytest.mark.parametrize("text", ["", "\n# only a comment\n"])
def test_empty_file(tmp_path: Path, text: str) -> None:
    (issue,) = issues_of(write(tmp_path, text))
    assert "empty" in issue.message and (issue.line, issue.column) == (1, 1)
    assert str(issue).startswith(f"{tmp_path / 's.yaml'}:1:1: the file is empty")


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_not_a_mapping(tmp_path: Path, text: str) -> None:
    (issue,) = issues_of(write(tmp_path, text))
    assert issue.line == 1 and "a scenario is a mapping" in issue.message


def test_missing_file(tmp_path: Path) -> None:
    (issue,) = issues_of(tmp_path / "nope.yaml")
    assert (
        issue.message == "no such file" and str(issue) == f"{tmp_path / 'nope.yaml'}: no such file"
    )


def test_json_scenario_with_lines(tmp_path: Path) -> None:
    data = {
        "name": "j",
        "description": "json",
        "vm": {"memory": [{"id": "ram0", "size": "4M"}]},
        "steps": [{"action": "sleep", "seconds": "10ms"}, {"action": "vm.reset"}],
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(data, indent=2))
    loaded = load_scenario(path)
    assert loaded.scenario.name == "j" and len(loaded.step_lines) == 2
    assert loaded.step_lines[0] < loaded.step_lines[1]
    data["steps"][1]["bogus"] = 1  # type: ignore[index]
    path.write_text(json.dumps(data, indent=2))
    (issue,) = issues_of(path)
    assert issue.field == "steps[1].bogus"
    assert path.read_text().splitlines()[issue.line - 1].strip().startswith('"bogus"')  # type: ignore[operator]


def test_json_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{\n  "name": \n}\n')
    (issue,) = issues_of(path)
    assert issue.type == "json_syntax" and issue.line == 3


def test_load_paths_recurses_sorted_and_collects(tmp_path: Path) -> None:
    write(tmp_path, GOOD.replace("name: good", "name: b"), "d/b.yaml")
    write(tmp_path, GOOD.replace("name: good", "name: a"), "d/sub/a.yml")
    write(tmp_path, GOOD.replace("name: good", "name: c"), "d/0.yaml")
    write(tmp_path, "not: scenario\n", "d/notes.txt")
    bad = write(tmp_path, GOOD.replace("seed: 0x10", "seed: x"), "d/bad.yaml")
    loaded, issues = load_paths([tmp_path / "d", tmp_path / "missing"])
    assert [item.path.relative_to(tmp_path).as_posix() for item in loaded] == [
        "d/0.yaml",
        "d/b.yaml",
        "d/sub/a.yml",
    ]
    assert [(i.file, i.field) for i in issues] == [
        (tmp_path / "missing", ""),
        (bad, "steps[0].seed"),
    ]


def test_load_paths_duplicate_names(tmp_path: Path) -> None:
    first = write(tmp_path, GOOD, "a.yaml")
    second = write(tmp_path, GOOD, "b.yaml")
    loaded, issues = load_paths([first, second])
    assert len(loaded) == 2
    (issue,) = issues
    assert (issue.file, issue.line, issue.field) == (second, 1, "name")
    assert str(first) in issue.message


def test_load_paths_empty_directory(tmp_path: Path) -> None:
    loaded, issues = load_paths([tmp_path])
    assert loaded == [] and "no *.yaml" in issues[0].message


@pytest.mark.parametrize(
    ("steps", "starts", "ends"),
    [
        # a list at column 0 under "steps:", then another top-level key
        ("steps:\n- action: vm.stop\n  name: a\n- action: vm.cont\n  name: b\n", [6, 8], [7, 9]),
        # a flow list on one line
        ("steps: [{action: vm.stop}, {action: vm.cont}]\n", [5, 5], [5, 5]),
        # the last step followed by comments and a blank line before the next key
        ("steps:\n  - action: vm.stop\n    # why\n\n  # next\n", [7], [7]),
    ],
)
def test_step_lines(tmp_path: Path, steps: str, starts: list[int], ends: list[int]) -> None:
    head = "name: x\ndescription: d\nvm:\n  memory: [{id: ram0, size: 4K}]\n"
    text = head + ("# steps follow\n" if len(starts) == 1 else "") + steps + "tags: [t]\n"
    loaded = load_scenario(write(tmp_path, text))
    assert loaded.step_lines == starts
    assert loaded.step_end_lines == ends
