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
from qmpgmem.report.result import ScenarioResult, Status, StepResult

__all__ = ["SelftestRun", "collect", "default_runs", "job_script"]

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


def job_script(kernel: LabKernel, runs: list[SelftestRun]) -> str:
    """Shell for L1: each run under timeout(1), output, exit status and seconds into the share."""
    lines = ['out="$QMPGMEM_LAB_OUT"', "cd /run/tmp"]
    for run in runs:
        binary = shlex.quote(str(kernel.selftest(run.binary)))
        args = " ".join(shlex.quote(a) for a in run.args)
        slug = run.slug
        lines += [
            f'echo "=== selftest {run.name}"',
            "s=$(date +%s.%N)",
            f'timeout -k 5 {run.timeout:.0f} {binary} {args} > "$out/{slug}.out" 2>&1',
            f'echo $? > "$out/{slug}.rc"',
            f'echo "$(date +%s.%N) $s" | awk \'{{print $1 - $2}}\' > "$out/{slug}.time"',
            f'tail -n 3 "$out/{slug}.out"; echo "=== rc=$(cat "$out/{slug}.rc")"',
        ]
    return "\n".join(lines) + "\n"


def collect(out_dir: Path, runs: list[SelftestRun], kernel: LabKernel) -> list[ScenarioResult]:
    """The results of ``runs`` from the files the job left in ``out_dir``."""
    results = []
    for run in runs:
        file = str(kernel.selftest(run.binary))
        try:
            text = (out_dir / f"{run.slug}.out").read_text(errors="replace")
            status_code = int((out_dir / f"{run.slug}.rc").read_text().strip())
        except (OSError, ValueError):
            results.append(
                ScenarioResult(
                    scenario=run.name,
                    file=file,
                    status=Status.ERROR,
                    engine=ENGINE,
                    reason="the selftest left no output or exit status (L1 stopped early?)",
                )
            )
            continue
        try:
            seconds = float((out_dir / f"{run.slug}.time").read_text())
        except (OSError, ValueError):
            seconds = 0.0
        tap = parse_tap(text)
        status, reason = verdict(status_code, tap)
        steps = [
            StepResult(index=t.number, action="tap", name=t.description, status=t.status,
                       message=t.directive)
            for t in tap.tests
        ]  # fmt: skip
        results.append(
            ScenarioResult(
                scenario=run.name,
                file=file,
                status=status,
                reason=reason,
                duration_s=seconds,
                engine=ENGINE,
                accel="kvm",
                steps=steps,
            )
        )
    return results
