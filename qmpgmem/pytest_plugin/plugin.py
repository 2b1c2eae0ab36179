"""pytest plugin: scenario files become test items (``pytest --qmpgmem scenarios/``).

Why a plugin: CI systems of QEMU/KVM/firmware stacks already run pytest and read its JUnit
XML; each scenario is one item, a skip carries the capability reason, and a failure reprints
the failing step's lines of the YAML file. Off unless ``--qmpgmem`` is given, so installing
qmpgmem never changes another project's test collection.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from qmpgmem.report.result import ScenarioResult, Status
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import SCENARIO_SUFFIXES, LoadedScenario, load_scenario


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qmpgmem", "qmpgmem scenario files")
    group.addoption("--qmpgmem", action="store_true", help="Collect scenario files as tests.")
    group.addoption("--qmpgmem-engine", default="qemu", choices=["qemu", "kvm"])
    group.addoption("--qmpgmem-qemu", default=None, metavar="BIN", help="QEMU binary.")
    group.addoption("--qmpgmem-accel", default=None, choices=["kvm", "tcg", "auto"])
    group.addoption("--qmpgmem-artifacts", default="qmpgmem-artifacts", metavar="DIR")


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if parent.config.getoption("qmpgmem") and file_path.suffix in SCENARIO_SUFFIXES:
        return ScenarioFile.from_parent(parent, path=file_path)
    return None


class ScenarioFile(pytest.File):
    def collect(self) -> Any:
        from qmpgmem.host.requirements import check_requirement_syntax

        # a ScenarioError fails collection with FILE:LINE
        loaded = load_scenario(self.path, requirement_check=check_requirement_syntax)
        yield ScenarioItem.from_parent(self, name=loaded.scenario.name, loaded=loaded)


class ScenarioFailed(Exception):
    def __init__(self, result: ScenarioResult):
        super().__init__(result.reason)
        self.result = result


class ScenarioItem(pytest.Item):
    def __init__(self, *, loaded: LoadedScenario, **kw: Any) -> None:
        super().__init__(**kw)
        self.loaded = loaded

    def runtest(self) -> None:
        from qmpgmem.engines.factory import build_engine
        from qmpgmem.runner import ScenarioRun
        from qmpgmem.session import host_context

        cfg = self.config
        options = RunOptions(
            engine=cfg.getoption("qmpgmem_engine"),
            accel=cfg.getoption("qmpgmem_accel"),
            artifacts_dir=Path(cfg.getoption("qmpgmem_artifacts")),
        )

        async def go() -> ScenarioResult:
            ctx = await host_context(cfg.getoption("qmpgmem_qemu"))
            return await ScenarioRun(self.loaded, ctx, options, build_engine).run()

        result = asyncio.run(go())
        self.user_properties.append(("status", str(result.status)))
        if result.status is Status.SKIPPED:
            pytest.skip(result.reason)
        if result.status is not Status.PASSED:
            raise ScenarioFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        if not isinstance(excinfo.value, ScenarioFailed):
            return super().repr_failure(excinfo)
        r = excinfo.value.result
        out = [f"{r.status}: {r.reason}"]
        lines = self.loaded.text.splitlines()
        for st in r.steps:
            if st.status is not Status.PASSED and st.line:
                end = next((s for s in self.loaded.step_lines if s > st.line), st.line + 6)
                out.append(f"step {st.index} ({self.loaded.path}:{st.line}):")
                out += [
                    f"  {n:4} | {lines[n - 1]}" for n in range(st.line, min(end, len(lines) + 1))
                ]
                if st.expected or st.seen:
                    out.append(f"  expected: {st.expected}\n  seen:     {st.seen}")
        if r.artifacts:
            out.append(f"artifacts: {r.artifacts}\nreproduce: {r.reproduce}")
        return "\n".join(out)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, 0, f"scenario: {self.name}"
