"""pytest plugin: scenario files become test items (``pytest --qmpgmem scenarios/``).

Why a plugin: CI systems of QEMU/KVM/firmware stacks already run pytest and read its JUnit
XML; each scenario is one item per engine and QEMU binary, a skip carries the capability
reason and the YAML line, a failure reprints the failing step's lines of the file, and an
error or timeout is a pytest error. Off unless ``--qmpgmem`` is given, so installing qmpgmem
never changes another project's test collection; with it, only files that look like
scenarios (and match the ini ``qmpgmem_paths``) are collected. docs/pytest-plugin.md has the
whole contract.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from qmpgmem.pytest_plugin.variants import ENGINES, STATE, PluginState

# Everything else of qmpgmem is imported once --qmpgmem is given: pytest loads this plugin
# (entry point pytest11) in every run of a venv that has qmpgmem installed.

#: Prefix of the testsuite properties this plugin writes into pytest's JUnit XML.
PROPERTY_PREFIX = "qmpgmem"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("qmpgmem", "qmpgmem scenario files")
    group.addoption("--qmpgmem", action="store_true", help="Collect scenario files as tests.")
    group.addoption(
        "--qmpgmem-engine",
        action="append",
        choices=list(ENGINES),
        metavar="ENGINE",
        help="Engine to run each scenario on: qemu (default) or kvm; repeat for both.",
    )
    group.addoption(
        "--qmpgmem-qemu",
        action="append",
        metavar="BIN",
        help="QEMU binary for the qemu engine (default qemu-system-x86_64 on PATH); "
        "repeat to run each scenario on each.",
    )
    group.addoption("--qmpgmem-accel", default=None, choices=["kvm", "tcg", "auto"])
    group.addoption("--qmpgmem-artifacts", default="qmpgmem-artifacts", metavar="DIR")
    group.addoption(
        "--qmpgmem-allow-unsafe",
        action="store_true",
        help="Run scenario steps that reach the host (QMP commands that run programs or "
        "touch host files, raw qemu_args, files outside the run directory); as qmpgmem run "
        "--allow-unsafe: a scenario file is then code (docs/security.md).",
    )
    parser.addini(
        "qmpgmem_paths",
        "With --qmpgmem, collect scenario files only where one of these globs matches "
        "(relative to the rootdir; a directory takes everything below it).",
        type="args",
        default=[],
    )


def pytest_configure(config: pytest.Config) -> None:
    if not config.getoption("qmpgmem"):
        return
    from qmpgmem import hostinfo

    qemu = list(dict.fromkeys(config.getoption("qmpgmem_qemu") or []))
    for name in qemu:
        binary = hostinfo.find_qemu(name)
        if binary is None or not os.access(binary, os.X_OK) or os.path.isdir(binary):
            raise pytest.UsageError(f"--qmpgmem-qemu {name}: no such executable")
    config.stash[STATE] = PluginState(
        engines=list(dict.fromkeys(config.getoption("qmpgmem_engine") or ["qemu"])),
        qemu=qemu,
        accel=config.getoption("qmpgmem_accel"),
        artifacts=Path(config.getoption("qmpgmem_artifacts")),
        patterns=list(config.getini("qmpgmem_paths")),
        allow_unsafe=bool(config.getoption("qmpgmem_allow_unsafe")),
    )


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    state = config.stash.get(STATE, None)
    if state is None:
        return None
    ctx = state.collect_context()
    kvm = ctx.kvm_backend or "none"
    if not ctx.kvm_usable:
        kvm += f" (unusable: {ctx.kvm_unusable})"
    qemus = ", ".join(f"{b} {ctx.qemu_versions.get(b) or '?'}" for b in ctx.qemu_binaries)
    unsafe = "; --qmpgmem-allow-unsafe: scenario files are code" if state.allow_unsafe else ""
    return [
        f"qmpgmem: engines {', '.join(state.engines)}; KVM {kvm}; "
        f"QEMU {qemus or 'none found'}{unsafe}"
    ]


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    state = parent.config.stash.get(STATE, None)
    if state is None:
        return None
    from qmpgmem.pytest_plugin.items import ScenarioFile
    from qmpgmem.scenario.loader import SCENARIO_SUFFIXES, looks_like_scenario

    if file_path.suffix not in SCENARIO_SUFFIXES:
        return None
    # A file named on the command line is the user's choice: load it, and say if it is none.
    if not parent.session.isinitpath(file_path):
        if state.patterns and not matches_paths(file_path, parent.config.rootpath, state.patterns):
            return None
        if not looks_like_scenario(file_path):
            return None
    return ScenarioFile.from_parent(parent, path=file_path)


def matches_paths(path: Path, root: Path, patterns: list[str]) -> bool:
    """Whether ``path`` is selected by one of ``patterns`` (fnmatch, relative to ``root``).

    A pattern without ``/`` also matches the file's name (``*.scenario.yaml``); a pattern
    matching a directory selects everything below it (``scenarios``); ``*`` crosses ``/``
    and ``**/`` may match no directory at all (``scenarios/**/*.yaml`` takes
    ``scenarios/a.yaml`` too).
    """
    try:
        rel = path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        rel = path.resolve().as_posix()
    candidates = [rel, *(p.as_posix() for p in Path(rel).parents if p != Path("."))]
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if os.path.isabs(pattern):
            pattern = Path(pattern).resolve().as_posix()
        alternatives = {pattern, pattern.replace("**/", "")}
        if "/" not in pattern and fnmatch.fnmatchcase(path.name, pattern):
            return True
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in alternatives):
            return True
    return False


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if item.config.stash.get(STATE, None) is not None:
        from qmpgmem.pytest_plugin.items import ScenarioItem

        if isinstance(item, ScenarioItem):
            item.locate_report(report, call)
    return report


#: Where an xdist worker hands its testsuite properties to the controller (workeroutput).
WORKER_PROPERTIES = "qmpgmem_properties"


@pytest.hookimpl(tryfirst=True)  # before the junitxml plugin writes its file
def pytest_sessionfinish(session: pytest.Session) -> None:
    state = session.config.stash.get(STATE, None)
    if state is None:
        return
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller writes the JUnit file
        if state.host_context is not None:
            workeroutput[WORKER_PROPERTIES] = testsuite_properties(state, session.items)
        return
    try:
        from _pytest.junitxml import xml_key
    except ImportError:  # pragma: no cover - pytest without its junitxml internals
        return
    xml = session.config.stash.get(xml_key, None)
    if xml is None:
        return
    if state.worker_properties:  # under xdist the items ran in the workers
        properties = merged_properties(state.worker_properties)
    elif state.host_context is not None:
        properties = testsuite_properties(state, session.items)
    else:
        return
    for name, value in properties:
        xml.add_global_property(name, value)


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent without xdist
def pytest_testnodedown(node: Any, error: object) -> None:
    """An xdist worker finished: keep the properties it computed for the controller's JUnit."""
    state = node.config.stash.get(STATE, None)
    output = getattr(node, "workeroutput", None) or {}
    if state is not None and output.get(WORKER_PROPERTIES):
        state.worker_properties.append([(str(k), str(v)) for k, v in output[WORKER_PROPERTIES]])


def merged_properties(per_worker: list[list[tuple[str, str]]]) -> list[tuple[str, str]]:
    """One worker's host fingerprint (the same host: the first that ran a scenario) and the
    union of every worker's scenario tags, each property once."""
    merged: dict[str, str] = {}
    for properties in per_worker:
        for name, value in properties:
            merged.setdefault(name, value)
    host = [(n, v) for n, v in merged.items() if n.startswith(f"{PROPERTY_PREFIX}.host.")]
    tags = sorted((n, v) for n, v in merged.items() if not n.startswith(f"{PROPERTY_PREFIX}.host."))
    return host + tags


def testsuite_properties(state: PluginState, items: list[pytest.Item]) -> list[tuple[str, str]]:
    """The host fingerprint and each scenario's tags, as (name, value) strings.

    Testsuite properties, never per-test ones: pytest writes ``record_property`` into each
    ``<testcase>``, which Jenkins' junit-10.xsd (xunit2) does not allow.
    """
    from qmpgmem.pytest_plugin.items import ScenarioItem
    from qmpgmem.sanitize import printable
    from qmpgmem.session import host_info

    ctx = state.host_context
    assert ctx is not None
    info = host_info(ctx, ",".join(state.engines)).properties()
    props = [(f"{PROPERTY_PREFIX}.host.{key}", value) for key, value in info.items()]
    tags: dict[str, list[str]] = {}
    for item in items:
        if isinstance(item, ScenarioItem) and item.loaded.scenario.tags:
            tags.setdefault(item.loaded.scenario.name, item.loaded.scenario.tags)
    props += [
        (f"{PROPERTY_PREFIX}.tags.{printable(name)}", ",".join(t)) for name, t in tags.items()
    ]
    return props
