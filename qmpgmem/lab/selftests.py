"""The kernel's own guest_memfd selftests, run in L1 from the same tree as its kernel.

Why: the lab's CPU is an emulation (QEMU TCG's SVM), so a qmpgmem result seen only there is
held against the kernel's selftests on the same kernel before it is called KVM behaviour.
Each run becomes a result of the same shape as a scenario's (engine ``selftest``), so the
JSON and JUnit reports and the summary table read them unchanged.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qmpgmem.lab.build import LabKernel
from qmpgmem.lab.tap import parse_tap, verdict
from qmpgmem.report.repeats import fold_repeats
from qmpgmem.report.result import ScenarioResult, Status, StepResult, result_id

__all__ = ["SelftestRun", "collect", "default_runs", "job_script", "run_slugs", "select_runs"]

ENGINE: Final = "selftest"


@dataclass(frozen=True)
class SelftestRun:
    """One invocation of a selftest binary (the lab's cache holds the binaries)."""

    binary: str  # base name: guest_memfd_test
    args: tuple[str, ...] = ()
    timeout: float = 300.0

    @property
    def name(self) -> str:
        return " ".join([self.binary, *self.args])

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", self.name)


def default_runs(cpus: int) -> list[SelftestRun]:
    """What the lab runs: the guest_memfd and conversion selftests, as listed in docs/lab.md."""
    n = str(max(cpus, 1))
    return [
        SelftestRun("guest_memfd_test"),
        SelftestRun("private_mem_kvm_exits_test"),
        SelftestRun("private_mem_conversions_test", timeout=600),
        SelftestRun("private_mem_conversions_test", ("-n", n, "-m", n), timeout=600),
        SelftestRun("private_mem_conversions_test", ("-s", "shmem"), timeout=600),
        SelftestRun("set_memory_region_test", timeout=600),
    ]


#: Seconds before a run's deadline at which the job notes what the selftest's threads do.
SNAPSHOT_BEFORE: Final = 15.0

#: Shell: every thread of the children of timeout(1) ($1), twice 1 s apart: its state, CPU
#: ticks (user, system, guest: /proc/PID/stat fields 14, 15, 43) and wait channel, then its
#: kernel stack. Why: a selftest that hangs in L1 says nothing before timeout(1) kills it, and
#: two readings tell a vCPU that runs (ticks move) from one that waits (docs/lab.md).
_SNAPSHOT_FN: Final = r"""qmpgmem_fields() {  # FILE N...: $fields = fields N of a stat file
  fields=""
  read -r line < "$1" 2>/dev/null || return 0
  shift
  rest=${line##*) }
  for n in "$@"; do set -- $rest; shift $((n - 3)); fields="$fields${fields:+ }$1"; done
}
qmpgmem_snapshot() {  # without forks: under TCG each one in L1 costs milliseconds
  parent=$1
  for round in 1 2; do
    for p in /proc/[0-9]*; do
      qmpgmem_fields $p/stat 4
      [ "$fields" = "$parent" ] || continue
      for task in $p/task/*; do
        comm="" wchan=""
        read -r comm < $task/comm 2>/dev/null
        read -r wchan < $task/wchan 2>/dev/null
        qmpgmem_fields $task/stat 3 14 15 43
        echo "round $round task ${task##*/} $comm: $fields; wchan $wchan"
        [ $round = 1 ] && continue
        { while read -r frame; do echo "    $frame"; done < $task/stack; } 2>/dev/null
      done
    done
    [ $round = 1 ] && sleep 1
  done
  return 0
}"""


#: What each line of a snapshot holds after the thread's id and name.
SNAPSHOT_LEGEND: Final = "state, CPU ticks user system guest; wait channel"


def snapshot_delay(timeout: float) -> float:
    """When, after a run starts, its threads are noted: SNAPSHOT_BEFORE before the deadline
    (half-way for runs shorter than twice that)."""
    return max(timeout - SNAPSHOT_BEFORE, timeout / 2)


def run_slugs(run: SelftestRun, repeat: int = 1) -> list[str]:
    """The file stem of each of ``repeat`` runs of ``run`` in the share."""
    return [run.slug] if repeat == 1 else [f"{run.slug}.{i}" for i in range(1, repeat + 1)]


def select_runs(runs: list[SelftestRun], substring: str | None) -> list[SelftestRun]:
    """The runs whose name contains ``substring`` (all without one)."""
    return [r for r in runs if substring is None or substring in r.name]


def job_script(kernel: LabKernel, runs: list[SelftestRun], repeat: int = 1) -> str:
    """Shell for L1: each run under timeout(1), ``repeat`` times, its output, exit status and
    seconds into the share; what its threads do shortly before the deadline into
    ``<slug>.hang`` (empty when it ends in time)."""
    lines = ['out="$QMPGMEM_LAB_OUT"', "cd /run/tmp", _SNAPSHOT_FN]
    for run in runs:
        binary = shlex.quote(str(kernel.selftest(run.binary)))
        args = " ".join(shlex.quote(a) for a in run.args)
        delay = snapshot_delay(run.timeout)
        for slug in run_slugs(run, repeat):
            lines += [
                f'echo "=== selftest {run.name}"',
                "s=$(date +%s.%N)",
                f'timeout -k 5 {run.timeout:.0f} {binary} {args} > "$out/{slug}.out" 2>&1 &',
                "t=$!",
                # the watcher: its sleep ends with it when the run finishes first
                f"(trap 'kill $z 2>/dev/null; exit 0' TERM; sleep {delay:.0f} & z=$!; wait $z;"
                f' qmpgmem_snapshot $t) > "$out/{slug}.hang" 2>&1 &',
                "w=$!",
                f'wait $t; echo $? > "$out/{slug}.rc"',
                "kill $w 2>/dev/null; wait $w 2>/dev/null",
                f'echo "$(date +%s.%N) $s" | awk \'{{print $1 - $2}}\' > "$out/{slug}.time"',
                f'tail -n 3 "$out/{slug}.out"; echo "=== rc=$(cat "$out/{slug}.rc")"',
            ]
    return "\n".join(lines) + "\n"


def _noted_threads(out_dir: Path, slug: str) -> str:
    """What the job's watcher noted of a run's threads ("" when it ended in time)."""
    try:
        return (out_dir / f"{slug}.hang").read_text(errors="replace").strip()
    except OSError:
        return ""


def _result(out_dir: Path, run: SelftestRun, slug: str, file: str) -> ScenarioResult:
    """One run's result from the files ``slug`` names in ``out_dir``."""
    name = result_id(run.name, ENGINE)
    try:
        text = (out_dir / f"{slug}.out").read_text(errors="replace")
        status_code = int((out_dir / f"{slug}.rc").read_text().strip())
    except (OSError, ValueError):
        return ScenarioResult(
            id=name,
            scenario=run.name,
            file=file,
            status=Status.ERROR,
            engine=ENGINE,
            reason="the selftest left no output or exit status (L1 stopped early?)",
        )
    try:
        seconds = float((out_dir / f"{slug}.time").read_text())
    except (OSError, ValueError):
        seconds = 0.0
    tap = parse_tap(text)
    status, reason = verdict(status_code, tap)
    warnings = []
    noted = _noted_threads(out_dir, slug)
    if noted and status is not Status.PASSED:
        when = f"{snapshot_delay(run.timeout):.0f} s after its start ({SNAPSHOT_LEGEND})"
        warnings.append(f"its threads {when}, read twice 1 s apart:\n{noted}")
        states = [ln.removeprefix("round 2 task ") for ln in noted.splitlines()]
        states = [ln for ln in states if not ln.startswith(("round 1", " "))]
        if states:
            reason += f"; its threads {when}: " + " | ".join(states)
    steps = [
        StepResult(index=t.number, action="tap", name=t.description, status=t.status,
                   message=t.directive)
        for t in tap.tests
    ]  # fmt: skip
    return ScenarioResult(
        id=name,
        scenario=run.name,
        file=file,
        status=status,
        reason=reason,
        duration_s=seconds,
        engine=ENGINE,
        accel="kvm",
        steps=steps,
        warnings=warnings,
    )


def collect(
    out_dir: Path, runs: list[SelftestRun], kernel: LabKernel, repeat: int = 1
) -> list[ScenarioResult]:
    """The results of ``runs`` from the files the job left in ``out_dir``: one per run, its
    ``repeat`` runs folded as ``run --repeat`` folds a scenario's (flaky when they differ)."""
    results = []
    for run in runs:
        file = str(kernel.selftest(run.binary))
        for index, slug in enumerate(run_slugs(run, repeat)):
            result = _result(out_dir, run, slug, file)
            if repeat > 1:
                result = result.model_copy(update={"repeat_index": index})
            results.append(result)
    return fold_repeats(results)
