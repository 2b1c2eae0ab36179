"""A run of many scenarios: host context once, the planned runs (one after another or several
at once, :mod:`qmpgmem.scheduler`), one report in plan order.

Why apart from the CLI: the CLI and the pytest plugin both drive runs; neither should know how
the host is probed or how results are summed up.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

from qmpgmem import hostinfo
from qmpgmem.durations import Durations, longest_first
from qmpgmem.engines.factory import build_engine
from qmpgmem.errors import SetupError
from qmpgmem.once import OnceCache
from qmpgmem.report.repeats import fold_repeats
from qmpgmem.report.result import HostInfo, RunReport, ScenarioResult, Summary
from qmpgmem.rundir import reap_stale_run_dirs
from qmpgmem.runner import HostContext, RunOptions, ScenarioRun
from qmpgmem.scenario.loader import LoadedScenario
from qmpgmem.scheduler import OnResult, OnStart, Planned, run_planned

log = logging.getLogger(__name__)

#: Shared by whoever asks at once: one probe per set of binaries and probe choice.
_CONTEXTS: OnceCache[tuple[tuple[str, ...], bool], HostContext] = OnceCache()


async def host_context(qemu: Sequence[str] | str | None = None, probe: bool = True) -> HostContext:
    """What the runner needs of this host; probed once per process and set of QEMU binaries.

    ``qemu``: binaries in order of preference (default: qemu-system-x86_64 on PATH); each
    scenario runs with the first one that meets its requirements.
    """
    wanted = [qemu] if isinstance(qemu, str) else list(qemu or [])
    return await _CONTEXTS.get((tuple(wanted), probe), lambda: _probe_context(wanted, probe))


async def _probe_context(wanted: list[str], probe: bool) -> HostContext:
    reap_stale_run_dirs()
    binaries: list[str] = []
    names: list[str | None] = list(wanted) if wanted else [None]
    for name in names:
        binary = hostinfo.find_qemu(name)
        if binary is None and name is not None:
            raise SetupError(f"QEMU binary {name!r} not found")
        if binary is not None and binary not in binaries:
            binaries.append(binary)
    kvm_unusable = hostinfo.kvm_unusable_reason()
    ctx = HostContext(
        kvm_backend=hostinfo.kvm_backend(),
        kvm_usable=kvm_unusable is None,
        kvm_unusable=kvm_unusable or "",
        kernel_release=hostinfo.kernel_release(),
        qemu_binaries=binaries,
    )
    if probe:  # the probe asked each binary its version over QMP already
        from qmpgmem.host import probe_host

        ctx.facts = await probe_host(binaries)
        for b in binaries:
            q = ctx.facts.qemu_for(b)
            ctx.qemu_versions[b] = q.version_str if q is not None else None
    else:
        ctx.qemu_versions = {b: hostinfo.qemu_version(b) for b in binaries}
    return ctx


def host_info(ctx: HostContext, engine: str) -> HostInfo:
    """The report's host fingerprint (qmpgmem/host/fingerprint.py) from what ``ctx`` read."""
    from qmpgmem.host.fingerprint import host_fingerprint

    return host_fingerprint(
        engine=engine,
        qemu_binaries=ctx.qemu_binaries,
        qemu_versions=ctx.qemu_versions,
        kernel_release=ctx.kernel_release,
        kvm_backend=ctx.kvm_backend,
    )


def planned_runs(
    scenarios: Sequence[LoadedScenario],
    options: RunOptions | Sequence[RunOptions],
    qemu_binaries: Sequence[str] = (),
    *,
    matrix: bool = False,
    repeat: int = 1,
) -> list[Planned]:
    """Every run a ``qmpgmem run`` makes, in report order: engine x scenario x binary x
    repeat. The one place that expands a selection into runs, so the numbering of the lines,
    the reports and the scheduler all agree on it.

    ``options``: one per engine. ``matrix``: a qemu-engine run per binary of
    ``qemu_binaries``, each pinned to it (a binary the scenario's requirements rule out gives
    a skip saying why); without it the runner takes the first that meets them. The kvm
    engine has no binary axis. ``repeat``: each run that many times, numbered by
    ``repeat_index`` for :func:`qmpgmem.report.repeats.fold_repeats`.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, not {repeat}")
    engines = [options] if isinstance(options, RunOptions) else list(options)
    out: list[Planned] = []
    for opts in engines:
        pins: list[str | None] = [opts.qemu]
        if matrix and opts.engine == "qemu" and opts.qemu is None and qemu_binaries:
            pins = list(qemu_binaries)
        for loaded in scenarios:
            for binary in pins:
                for index in range(repeat):
                    run = dataclasses.replace(
                        opts, qemu=binary, repeat_index=index if repeat > 1 else None
                    )
                    out.append((loaded, run))
    return out


async def run_scenarios(
    scenarios: Sequence[LoadedScenario],
    ctx: HostContext,
    options: RunOptions | Sequence[RunOptions],
    on_start: OnStart | None = None,
    on_result: OnResult | None = None,
    plan_only: bool = False,
    *,
    matrix: bool = False,
    repeat: int = 1,
    jobs: int = 1,
    memory_budget: int | None = None,
    durations: Durations | None = None,
) -> RunReport:
    """Every run of :func:`planned_runs`; one report in plan order, the repeats folded.

    ``plan_only``: decide each run (skip reasons, errors found before start) without
    starting any VM; each result is would-run, would-skip (with the reason) or error. A plan
    decides each run once, whatever ``repeat`` (the decision does not change between
    repeats). ``jobs``, ``memory_budget``: how many runs at once, and how much VM memory in
    bytes they may hold together (:func:`qmpgmem.scheduler.run_planned`; None: no bound).
    ``on_start(index, scenario, options)`` and ``on_result(index, result)`` are called as
    runs start and finish, before folding; ``index`` is the run's place in the plan.
    """
    repeat = 1 if plan_only else repeat
    runs = [options] if isinstance(options, RunOptions) else list(options)

    async def run_one(loaded: LoadedScenario, opts: RunOptions) -> ScenarioResult:
        run = ScenarioRun(loaded, ctx, opts, build_engine)
        return await (run.plan() if plan_only else run.run())

    plan = planned_runs(scenarios, runs, ctx.qemu_binaries, matrix=matrix, repeat=repeat)
    history = None if plan_only else durations
    order = longest_first(plan, history) if history is not None and jobs > 1 else None

    def finished(index: int, result: ScenarioResult) -> None:
        if history is not None:
            loaded, opts = plan[index]
            history.record(loaded, opts, result.duration_s)
        if on_result is not None:
            on_result(index, result)

    try:
        results = await run_planned(
            plan,
            run_one,
            jobs=jobs,
            budget=memory_budget,
            on_start=on_start,
            on_result=finished,
            order=order,
        )
    finally:
        if history is not None:
            history.save()
    folded = fold_repeats(results)
    engines = ",".join(o.engine for o in runs)
    return RunReport(summary=Summary.of(folded), results=folded, host=host_info(ctx, engines))
