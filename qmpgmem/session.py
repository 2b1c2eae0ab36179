"""A run of many scenarios: host context once, scenarios one after another, one report.

Why apart from the CLI: the CLI and the pytest plugin both drive runs; neither should know how
the host is probed or how results are summed up.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from qmpgmem import hostinfo
from qmpgmem.engines.factory import build_engine
from qmpgmem.report.result import HostInfo, RunReport, ScenarioResult, Summary
from qmpgmem.runner import HostContext, RunOptions, ScenarioRun
from qmpgmem.scenario.loader import LoadedScenario

log = logging.getLogger(__name__)

_CONTEXTS: dict[tuple[str | None, bool], HostContext] = {}


async def host_context(qemu: str | None = None, probe: bool = True) -> HostContext:
    """What the runner needs of this host; probed once per process and QEMU binary."""
    key = (qemu, probe)
    if key in _CONTEXTS:
        return _CONTEXTS[key]
    binary = hostinfo.find_qemu(qemu)
    ctx = HostContext(
        kvm_backend=hostinfo.kvm_backend(),
        kvm_usable=hostinfo.kvm_usable(),
        kernel_release=hostinfo.kernel_release(),
        qemu_binary=binary,
        qemu_version=hostinfo.qemu_version(binary) if binary else None,
    )
    if probe:
        try:
            from qmpgmem.host import probe_host

            ctx.facts = await probe_host([binary] if binary else [])
        except ImportError:
            ctx.facts = None
    _CONTEXTS[key] = ctx
    return ctx


def host_info(ctx: HostContext, engine: str) -> HostInfo:
    return HostInfo(
        kernel_release=ctx.kernel_release,
        kvm_backend=ctx.kvm_backend or "none",
        qemu_binary=ctx.qemu_binary,
        qemu_version=ctx.qemu_version,
        engine=engine,
    )


async def run_scenarios(
    scenarios: Sequence[LoadedScenario],
    ctx: HostContext,
    options: RunOptions,
    on_start: Callable[[LoadedScenario], None] | None = None,
    on_result: Callable[[ScenarioResult], None] | None = None,
) -> RunReport:
    results: list[ScenarioResult] = []
    for loaded in scenarios:
        if on_start:
            on_start(loaded)
        result = await ScenarioRun(loaded, ctx, options, build_engine).run()
        results.append(result)
        if on_result:
            on_result(result)
    return RunReport(
        summary=Summary.of(results), results=results, host=host_info(ctx, options.engine)
    )
