"""Scenario files and items: one item per scenario and variant (engine, QEMU binary).

Why the run happens in ``setup``: pytest reports a test whose setup raised as an *error*,
one whose call raised as a *failure*. A scenario that errs or times out (QEMU crashed, the
harness broke) did not judge the code under test, so its run belongs to setup; only a verdict
of the scenario itself (``failed``) is raised from ``runtest``. Skips are raised from setup,
as pytest's own skip markers are.

Every report points into the YAML file: the failing (or skipping) step's line where the
result names a step, else the line of the scenario's ``name``.
"""

from __future__ import annotations

import asyncio
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest
from _pytest._code.code import ReprFileLocation, TerminalRepr

from qmpgmem.errors import QmpgmemError
from qmpgmem.pytest_plugin.variants import STATE, Variant
from qmpgmem.report.junit import artifacts_text
from qmpgmem.report.result import ScenarioResult, Status
from qmpgmem.runner import RunOptions
from qmpgmem.sanitize import printable
from qmpgmem.scenario.loader import (
    InvalidScenarioError,
    LoadedScenario,
    load_scenario,
    scenario_line,
)

if TYPE_CHECKING:
    from _pytest._code.code import TracebackStyle
    from _pytest._io import TerminalWriter

__all__ = ["ScenarioFile", "ScenarioItem", "ScenarioRepr", "display_path"]

#: A tag becomes a marker of the same name when it looks like one ``-m`` can name.
_MARKER_NAME: Final = re.compile(r"(?!_)[\w.+-]+")
#: The runner's reasons that concern one step begin "step N: " (N from 1).
_STEP_REASON: Final = re.compile(r"^step (\d+):")


def display_path(path: Path, config: pytest.Config) -> str:
    """``path`` relative to where pytest was started, when it lies below; else absolute."""
    try:
        return str(path.resolve().relative_to(config.invocation_params.dir.resolve()))
    except ValueError:
        return str(path.resolve())


def _key_line(text: str, key: str) -> int:
    """The 1-based line of a top-level ``key:`` of a scenario's text, else 1."""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith(f"{key}:") or line.lstrip("{ ").startswith(f'"{key}"'):
            return number
    return 1


class ScenarioOutcome(Exception):
    """A scenario's run did not pass; ``result`` says how."""

    def __init__(self, result: ScenarioResult) -> None:
        super().__init__(f"{result.status}: {result.reason}")
        self.result = result


class ScenarioFailed(ScenarioOutcome):
    """An expectation of the scenario did not hold: a pytest failure."""


class ScenarioBroke(ScenarioOutcome):
    """The run erred or timed out before it could judge: a pytest error."""


@dataclass(eq=False)
class ScenarioRepr(TerminalRepr):
    """A non-passing result as the terminal and JUnit show it: what went wrong, the step's
    YAML lines, and last ``FILE:LINE: status: reason`` (``reprcrash``, which the short
    summary and JUnit's ``message`` quote)."""

    lines: list[str]
    reprcrash: ReprFileLocation

    def toterminal(self, tw: TerminalWriter) -> None:
        for line in self.lines:
            tw.line(line)
        self.reprcrash.toterminal(tw)


class ScenarioFile(pytest.File):
    """A scenario file: one item per variant; an invalid file fails collection with
    FILE:LINE."""

    def collect(self) -> Iterator[ScenarioItem]:
        from qmpgmem.host.requirements import check_requirement_syntax

        loaded = load_scenario(self.path, requirement_check=check_requirement_syntax)
        state = self.config.stash[STATE]
        markers = self._markers(loaded.scenario.tags)
        for variant in state.variants(loaded.scenario):
            item = ScenarioItem.from_parent(
                self,
                name=f"{printable(loaded.scenario.name)}[{variant.id}]",
                loaded=loaded,
                variant=variant,
            )
            for marker in markers:
                item.add_marker(marker)
            yield item

    def _markers(self, tags: list[str]) -> list[str]:
        """The tags that become markers, registered so ``--strict-markers`` accepts them.

        A tag is left out (with a warning) when ``-m`` could not name it, or when a marker of
        that name takes arguments (``skip(reason)``, ``timeout(...)``): such a marker belongs
        to pytest or a plugin that acts on it, and a tag must not skip or time out a test.
        """
        registered: dict[str, bool] = {}  # marker name -> takes arguments
        for line in self.config.getini("markers"):
            signature = line.split(":", 1)[0]
            registered[signature.split("(")[0].strip()] = "(" in signature
        out = []
        for tag in tags:
            if not _MARKER_NAME.fullmatch(tag) or registered.get(tag):
                why = (
                    f"pytest's marker {tag!r} acts on the tests it marks"
                    if registered.get(tag)
                    else "a marker name is letters, digits and _.+- not starting with _"
                )
                warnings.warn_explicit(
                    f"qmpgmem: tag {tag!r} is not a marker: {why}",
                    pytest.PytestWarning,
                    filename=str(self.path),
                    lineno=_key_line(self.path.read_text(encoding="utf-8"), "tags"),
                )
                continue
            if tag not in registered:
                self.config.addinivalue_line("markers", f"{tag}: qmpgmem scenario tag")
                registered[tag] = False
            out.append(tag)
        return out

    def repr_failure(  # type: ignore[override]  # pytest's Collector drops ``style`` too
        self, excinfo: pytest.ExceptionInfo[BaseException]
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, InvalidScenarioError):
            # FILE:LINE:COL: field: message, one line per issue, FILE as the user named it
            shown = Path(display_path(self.path, self.config))
            return "\n".join(
                str(replace(issue, file=shown) if issue.file == self.path else issue)
                for issue in excinfo.value.issues
            )
        return super().repr_failure(excinfo)


class ScenarioItem(pytest.Item):
    """One scenario on one variant."""

    def __init__(self, *, loaded: LoadedScenario, variant: Variant, **kw: Any) -> None:
        super().__init__(**kw)
        self.loaded = loaded
        self.variant = variant
        self.result: ScenarioResult | None = None

    def setup(self) -> None:
        self.result = result = self._run()
        if result.artifacts:  # in <system-out> with -o junit_logging=system-out
            self.add_report_section("setup", "stdout", artifacts_text(result))
        if result.status is Status.SKIPPED:
            pytest.skip(result.reason)
        if result.status not in (Status.PASSED, Status.FAILED):
            raise ScenarioBroke(result)

    def runtest(self) -> None:
        if self.result is not None and self.result.status is Status.FAILED:
            raise ScenarioFailed(self.result)

    def _run(self) -> ScenarioResult:
        from qmpgmem.engines.factory import build_engine
        from qmpgmem.runner import ScenarioRun

        state = self.config.stash[STATE]
        try:
            ctx = state.context_for(self.variant)
        except QmpgmemError as exc:
            return ScenarioResult(
                scenario=self.loaded.scenario.name,
                file=str(self.loaded.path),
                status=Status.ERROR,
                reason=f"cannot probe the host: {exc}",
                engine=self.variant.engine,
                tags=list(self.loaded.scenario.tags),
            )
        options = RunOptions(
            engine=self.variant.engine,
            accel=state.accel,
            artifacts_dir=state.artifacts / self.variant.id,
            allow_unsafe=state.allow_unsafe,
        )
        run = ScenarioRun(self.loaded, ctx, options, build_engine)
        return asyncio.run(run.run())

    # -- reports -----------------------------------------------------------------------------

    def result_line(self, result: ScenarioResult) -> int:
        """The 1-based YAML line a result is about: its step's, else the scenario's."""
        for step in result.steps:
            if step.status is not Status.PASSED and step.line:
                return step.line
        match = _STEP_REASON.match(result.reason)
        if match and 0 < int(match[1]) <= len(self.loaded.step_lines):
            return self.loaded.step_lines[int(match[1]) - 1]
        running = len(result.steps)  # the total timeout stopped the step after the last result
        if (
            result.status is Status.TIMEOUT
            and result.boot_s is not None
            and running < len(self.loaded.step_lines)
        ):
            return self.loaded.step_lines[running]
        return scenario_line(self.loaded.text)

    def result_repr(self, result: ScenarioResult) -> ScenarioRepr:
        path = display_path(self.path, self.config)
        v = self.variant
        where = (
            f"QEMU {v.label} ({result.qemu or 'no binary'}), accel {result.accel}"
            if v.engine == "qemu"
            else "the kvm engine (/dev/kvm)"
        )
        show = printable  # the scenario's text and QEMU's words: no control character of theirs
        out = [f"scenario {show(result.scenario)} ({path}) on {where}"]
        if result.accel_note:
            out.append(f"note: {result.accel_note}")
        if self.loaded.scenario.tags:
            out.append("tags: " + ", ".join(self.loaded.scenario.tags))
        for step in result.steps:
            if step.status is Status.PASSED:
                continue
            label = show(step.name or step.action)
            at = f" ({path}:{step.line})" if step.line else ""
            out.append(f"step {step.index} {label}: {step.status}{at}")
            if step.line and 0 < step.index <= len(self.loaded.step_lines):
                source = self.loaded.step_source(step.index - 1)
                out += [f"  {line}" for line in source.splitlines()]
            if step.message:
                out.append(f"  {show(step.message)}")
            if step.expected or step.seen:
                out.append(
                    f"  expected: {show(str(step.expected))}\n  seen:     {show(str(step.seen))}"
                )
        if result.artifacts:
            out.append(artifacts_text(result))
        elif result.reproduce:
            out.append(f"reproduce: {result.reproduce}")
        crash = ReprFileLocation(
            path, self.result_line(result), printable(f"{result.status}: {result.reason}")
        )
        # and line by line what the logs' tails carry (the artifacts)
        lines = ["\n".join(show(part) for part in line.split("\n")) for line in out]
        return ScenarioRepr(lines, crash)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: TracebackStyle | None = None
    ) -> str | TerminalRepr:
        if isinstance(excinfo.value, ScenarioOutcome):
            return self.result_repr(excinfo.value.result)
        return super().repr_failure(excinfo, style)

    def locate_report(self, report: pytest.TestReport, call: pytest.CallInfo[None]) -> None:
        """Point a setup report (skip, error) at the YAML instead of this module's source.

        pytest renders setup failures without ``repr_failure`` and locates a skip where
        ``pytest.skip`` was called; both are replaced here (from pytest_runtest_makereport).
        """
        result = self.result
        if report.when != "setup" or result is None:
            return
        if report.skipped and result.status is Status.SKIPPED:
            path = display_path(self.path, self.config)
            report.longrepr = (path, self.result_line(result), printable(result.reason))
        elif report.failed and call.excinfo and isinstance(call.excinfo.value, ScenarioOutcome):
            report.longrepr = self.result_repr(call.excinfo.value.result)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, scenario_line(self.loaded.text) - 1, self.name
