"""Load scenario files: text -> positions -> pydantic models; every problem FILE:LINE:COL.

Three steps, three modules: :mod:`.source` parses the text into plain JSON values and their
positions, within limits on nesting, aliases and values; pydantic validates the values against
the models (:mod:`.model`); :mod:`.issues` turns what either finds into
``FILE:LINE:COL: field: message``. Here: reading the file (a regular file, at most
:data:`MAX_FILE_BYTES`, opened without blocking), the checks that need the file system (a
``guest.kernel`` that exists), and where each step starts and ends for reports that quote it.

Why refuse rather than survive: ``validate`` and ``run`` read files from anyone; a file that
would take minutes, gigabytes or a traceback is an error at a line, like any other.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from qmpgmem.scenario.issues import (
    InvalidScenarioError,
    ScenarioIssue,
    dedupe,
    file_issue,
    issue_from_error,
    issue_from_source,
    kind_of,
    locate,
)
from qmpgmem.scenario.model import REQUIREMENT_CHECK, Scenario
from qmpgmem.scenario.source import (
    Node,
    Parsed,
    SourceError,
    gc_paused,
    parse_json,
    parse_yaml,
)

__all__ = [
    "MAX_FILE_BYTES",
    "SCENARIO_SUFFIXES",
    "InvalidScenarioError",
    "LoadedScenario",
    "ScenarioIssue",
    "load_paths",
    "load_scenario",
    "looks_like_scenario",
    "scenario_line",
]

log = logging.getLogger(__name__)

SCENARIO_SUFFIXES: Final = (".yaml", ".yml", ".json")
#: Largest scenario file read; the library's are a few KiB.
MAX_FILE_BYTES: Final = 64 << 20


@dataclass(frozen=True)
class LoadedScenario:
    """A validated scenario together with where it came from, for reports that quote the file."""

    scenario: Scenario
    path: Path
    step_lines: list[int]  # 1-based line where each step starts
    text: str
    #: 1-based last line of each step (comments and blank lines after it excluded).
    step_end_lines: list[int] = field(default_factory=list)

    def step_source(self, index: int, numbered: bool = True) -> str:
        """The lines of step ``index`` as written in the file, numbered like an editor shows."""
        lines = self.text.splitlines()
        first = self.step_lines[index]
        last = self.step_end_lines[index] if self.step_end_lines else first
        width = len(str(last))
        out = []
        for number in range(first, last + 1):
            text = lines[number - 1] if number - 1 < len(lines) else ""
            out.append(f"{number:>{width}} | {text}" if numbered else text)
        return "\n".join(out)


# -- loading -----------------------------------------------------------------------------------


RequirementCheck = Callable[[str], str | None]


def load_scenario(
    path: str | Path, *, requirement_check: RequirementCheck | None = None
) -> LoadedScenario:
    """Read, parse and validate one scenario file.

    ``requirement_check`` (e.g. ``qmpgmem.host.check_requirement_syntax``) also rejects
    requirement names no host can answer; without it only their syntax is checked.

    :raise InvalidScenarioError: (a :class:`~qmpgmem.errors.ScenarioError`) with every issue found.
    """
    path = Path(path)
    text = _read_text(path, MAX_FILE_BYTES)
    with gc_paused():  # an object per value, none in a cycle: see source.gc_paused
        return _load_text(path, text, requirement_check)


def load_paths(
    paths: Iterable[str | Path], *, requirement_check: RequirementCheck | None = None
) -> tuple[list[LoadedScenario], list[ScenarioIssue]]:
    """Load every scenario file under ``paths`` (directories recurse, sorted); never raises.

    Each file is judged on its own: a broken one does not stop the others. Also reports a
    scenario name used by more than one file, since reports key on names.
    """
    loaded: list[LoadedScenario] = []
    issues: list[ScenarioIssue] = []
    for path in _expand(paths, issues):
        try:
            loaded.append(load_scenario(path, requirement_check=requirement_check))
        except InvalidScenarioError as exc:
            issues.extend(exc.issues)
        except Exception as exc:  # a bug of ours; the other files still get validated
            log.debug("%s: internal error while loading", path, exc_info=True)
            issues.append(
                ScenarioIssue(
                    path,
                    1,
                    1,
                    "",
                    f"internal error while loading ({type(exc).__name__}: {exc}); "
                    "this is a bug in qmpgmem",
                    "internal",
                )
            )
    first_by_name: dict[str, LoadedScenario] = {}
    for item in loaded:
        other = first_by_name.setdefault(item.scenario.name, item)
        if other is not item:
            line, column = _name_position(item.text)
            issues.append(
                ScenarioIssue(
                    item.path,
                    line,
                    column,
                    "name",
                    f"scenario name {item.scenario.name!r} is also used by {other.path}",
                    "qmpgmem_duplicate",
                )
            )
    return loaded, issues


def _expand(paths: Iterable[str | Path], issues: list[ScenarioIssue]) -> list[Path]:
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix in SCENARIO_SUFFIXES
            )
            if not found:
                issues.append(file_issue(path, "directory holds no *.yaml, *.yml or *.json files"))
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            issues.append(file_issue(path, "no such file or directory"))
    return files


def _read_text(path: Path, limit: int) -> str:
    """The file's text, if it is a regular UTF-8 file of at most ``limit`` bytes.

    Why stat first and open with O_NONBLOCK: opening a FIFO for reading waits for a writer,
    and a device may do something on open; neither is a scenario.

    :raise InvalidScenarioError: without a line, except for bytes that are not UTF-8.
    """
    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise InvalidScenarioError(
                path, [file_issue(path, "is a directory; use load_paths for directories")]
            )
        _check_regular(path, info, limit)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        with open(fd, "rb") as stream:
            info = os.fstat(stream.fileno())
            _check_regular(path, info, limit)  # replaced since the stat?
            # read(n) allocates n bytes at once: ask for what the file holds, then the rest
            data = stream.read(info.st_size + 1)
            if len(data) > info.st_size:  # it grew since
                data += stream.read(limit + 1 - len(data))
    except FileNotFoundError:
        raise InvalidScenarioError(path, [file_issue(path, "no such file")]) from None
    except OSError as exc:
        raise InvalidScenarioError(
            path, [file_issue(path, f"cannot read: {exc.strerror or exc}")]
        ) from None
    if len(data) > limit:
        raise InvalidScenarioError(path, [file_issue(path, _too_large(limit))])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise InvalidScenarioError(
            path,
            [
                ScenarioIssue(
                    path,
                    line,
                    column,
                    "",
                    f"not UTF-8 text: byte 0x{data[exc.start]:02x} ({exc.reason})",
                    "encoding",
                )
            ],
        ) from None
    if "\r" in text:  # as Python's text mode reads it
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _check_regular(path: Path, info: os.stat_result, limit: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise InvalidScenarioError(
            path,
            [file_issue(path, f"not a regular file ({_file_type(info.st_mode)}); not read")],
        )
    if info.st_size > limit:
        raise InvalidScenarioError(path, [file_issue(path, _too_large(limit))])


def _too_large(limit: int) -> str:
    return f"larger than {limit >> 20} MiB, the most a scenario file may hold"


def _file_type(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISDIR, "a directory"),
    ):
        if test(mode):
            return name
    return "not a file"


#: The keys every scenario must have (name, description, vm, steps), from the model.
_REQUIRED_KEYS: Final = frozenset(
    info.alias or name for name, info in Scenario.model_fields.items() if info.is_required()
)
#: Of those, the ones an unrelated file rarely has at its top level.
_DISTINCT_KEYS: Final = frozenset({"vm", "steps"}) & _REQUIRED_KEYS
#: A scenario is a few KiB; a larger file is data, not a scenario.
_SNIFF_LIMIT: Final = 1 << 20
#: A top-level key of a block mapping: ``name:``, ``"name":``, at column 0.
_TOP_KEY = re.compile(
    r"""^(?:"([^"\n]*)"|'([^'\n]*)'|([A-Za-z_][\w.-]*))[ \t]*:(?=[ \t]|$)""", re.MULTILINE
)
_JSON_KEY = re.compile(r'"([A-Za-z_]\w*)"\s*:')


def looks_like_scenario(path: str | Path) -> bool:
    """Whether ``path`` is meant as a scenario file, without validating it.

    It is when its top level is a mapping with at least two of the keys every scenario must
    have (name, description, vm, steps), one of them vm or steps. A file that does not parse
    is judged by its top-level lines. Never raises; unreadable, non-UTF-8, non-regular files
    and files over 1 MiB are not scenarios.

    Why this loose: a collector (the pytest plugin) must leave a project's unrelated
    ``config.yaml`` alone, yet a scenario that misses a required key or has a syntax error
    must still reach :func:`load_scenario` and fail there with FILE:LINE.
    """
    path = Path(path)
    try:
        text = _read_text(path, _SNIFF_LIMIT)
    except InvalidScenarioError:
        return False
    keys: set[str]
    try:
        document = _parse(path, text).value
    except SourceError:  # a syntax error or a limit: read the keys off the lines
        pattern = _JSON_KEY if path.suffix == ".json" else _TOP_KEY
        keys = {next(g for g in m.groups() if g is not None) for m in pattern.finditer(text)}
    else:
        if not isinstance(document, dict):
            return False
        keys = {key for key in document if isinstance(key, str)}
    found = keys & _REQUIRED_KEYS
    return len(found) >= 2 and bool(found & _DISTINCT_KEYS)


def scenario_line(text: str) -> int:
    """The 1-based line where a scenario's text names it (its ``name:`` key), else 1."""
    return _name_position(text)[0]


def _parse(path: Path, text: str) -> Parsed:
    return parse_json(text) if path.suffix == ".json" else parse_yaml(text)


def _load_text(
    path: Path, text: str, requirement_check: RequirementCheck | None = None
) -> LoadedScenario:
    try:
        parsed = _parse(path, text)
    except SourceError as exc:
        raise InvalidScenarioError(path, [issue_from_source(path, exc)]) from None
    document, root = parsed.value, parsed.root
    if document is None:
        raise InvalidScenarioError(
            path,
            [
                ScenarioIssue(
                    path,
                    1,
                    1,
                    "",
                    "the file is empty; a scenario is a mapping with name, description, "
                    "vm and steps",
                    "empty",
                )
            ],
        )
    if not isinstance(document, dict):
        raise InvalidScenarioError(
            path,
            [
                ScenarioIssue(
                    path,
                    1,
                    1,
                    "",
                    "a scenario is a mapping with name, description, vm and steps, "
                    f"got {kind_of(document)}",
                    "model_type",
                )
            ],
        )
    try:
        context = {REQUIREMENT_CHECK: requirement_check} if requirement_check else None
        scenario = Scenario.model_validate(document, context=context)
    except ValidationError as exc:
        issues = [issue_from_error(path, document, root, error) for error in exc.errors()]
        issues.sort(key=lambda issue: (issue.line or 0, issue.column or 0))
        raise InvalidScenarioError(path, dedupe(issues)) from None
    issues = _file_issues(path, scenario, document, root)
    if issues:
        raise InvalidScenarioError(path, issues)
    step_lines, step_end_lines = _step_lines(document, root, text)
    log.debug("loaded %s: %d steps", path, len(scenario.steps))
    return LoadedScenario(scenario, path, step_lines, text, step_end_lines)


def _file_issues(
    path: Path, scenario: Scenario, document: Any, root: Node | tuple[int, int] | None
) -> list[ScenarioIssue]:
    """Files the scenario names that must exist before it runs: the guest's kernel, initrd.

    Relative paths are taken from the current directory, as QEMU takes them.
    """
    issues = []
    for key in ("kernel", "initrd"):
        name = getattr(scenario.vm.guest, key)
        if name is None:
            continue
        problem = _file_problem(name)
        if problem is not None:
            line, column, _, _ = locate(document, root, ("vm", "guest", key), "qmpgmem_file")
            issues.append(
                ScenarioIssue(path, line, column, f"vm.guest.{key}", problem, "qmpgmem_file")
            )
    return issues


def _file_problem(name: str) -> str | None:
    where = "" if os.path.isabs(name) else f" (relative to the current directory {os.getcwd()})"
    try:
        info = os.stat(name)
    except FileNotFoundError:
        return f"no such file: {name}{where}"
    except OSError as exc:
        return f"cannot use {name}: {exc.strerror or exc}"
    if not stat.S_ISREG(info.st_mode):
        return f"{name} is not a regular file ({_file_type(info.st_mode)})"
    if not os.access(name, os.R_OK):
        return f"{name} is not readable"
    return None


def _step_lines(
    document: dict[str, Any], root: Node | tuple[int, int] | None, text: str
) -> tuple[list[int], list[int]]:
    steps = document.get("steps") or []
    node = root.children.get("steps") if isinstance(root, Node) else None  # type: ignore[union-attr]
    if not isinstance(node, Node) or not isinstance(node.children, list):
        return [1] * len(steps), [1] * len(steps)
    positions = [child.position if isinstance(child, Node) else child for child in node.children]
    starts = [line for line, _ in positions]
    lines = text.splitlines()
    # A step ends before the next one starts; the last one where a line is indented less
    # than the step's content (the column after "- "), such as the next top-level key.
    ends = []
    for index, start in enumerate(starts):
        if index + 1 < len(starts):
            limit = max(start, starts[index + 1] - 1)
        else:
            column = positions[index][1] - 1
            limit = start
            for number in range(start + 1, len(lines) + 1):
                line = lines[number - 1]
                if _is_content(line) and _indent(line) < column:
                    break
                limit = number
        while limit > start and not _is_content(lines[limit - 1]):
            limit -= 1
        ends.append(limit)
    return starts, ends


def _is_content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _name_position(text: str) -> tuple[int, int]:
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("name:") or line.lstrip("{ ").startswith('"name"'):
            return number, 1
    return 1, 1
