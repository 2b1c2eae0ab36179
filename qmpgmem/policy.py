"""The trust model applied to one scenario: what it may do unless the run is ``--allow-unsafe``.

A scenario file is data (docs/security.md). Three fields could make it code, and each use of
them is found here, with the file's line, for the runner (an ``error`` before the VM starts,
``ScenarioRun.decide``) and for ``qmpgmem validate`` (an issue, exit 2):

* a ``qmp`` step whose arguments reach the host (host/qmp_policy.py: judged against the
  binary's ``query-qmp-schema`` in a run, by the same tables without it in ``validate``);
* ``vm.qemu_args`` beyond ``-machine PROP=WORD`` settings: raw arguments can add any device,
  file or program;
* a file region's ``path`` outside the run directory (an absolute path).

Why a module apart from the runner: ``validate`` applies the same rule without a host, and
one place states what "unsafe" means.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from qmpgmem.host.qmp_policy import Finding, QmpPolicy, judge_without_schema
from qmpgmem.scenario.loader import LoadedScenario
from qmpgmem.scenario.model import QmpCommand, Region

__all__ = ["OPT_IN", "UnsafeUse", "qemu_args_problem", "unsafe_uses"]

#: How every refusal ends: what the scenario needs and where the rule is written.
OPT_IN: Final = (
    "refused unless the run is --allow-unsafe (a scenario file is data; docs/security.md)"
)

_MACHINE_FLAGS: Final = frozenset({"-machine", "-M"})
_PROP: Final = re.compile(r"[a-z][a-z0-9_.-]*")
_WORD: Final = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9_.+-]*")


@dataclass(frozen=True)
class UnsafeUse:
    """One use of a field that needs ``--allow-unsafe``."""

    #: the field as ``validate`` prints it: ``steps[2]``, ``vm.qemu_args``, ``vm.memory[0].path``
    field: str
    line: int | None
    message: str
    #: the 1-based step number, for a step
    step: int | None = None

    def reason(self, file: object) -> str:
        """The run's error reason: ``step 3: qmp migrate (s.yaml:14): ...; refused unless ...``."""
        where = f"{file}:{self.line}" if self.line else str(file)
        head = f"step {self.step}: " if self.step is not None else f"{self.field} "
        return f"{head}({where}) {self.message}; {OPT_IN}"


def qemu_args_problem(args: Sequence[str]) -> str | None:
    """Why ``qemu_args`` could reach the host, or None for ``-machine PROP=WORD`` pairs.

    The one form allowed: ``-machine`` (or ``-M``) followed by comma-separated
    ``prop=word`` items (an optional machine type first), each word letters, digits and
    ``_.+-`` not starting with a dot. A machine property runs no program and opens no
    network; a file it names (``dumpdtb=x``) is a plain name, inside the run directory
    where QEMU runs.
    """
    if not args:
        return None
    for index in range(0, len(args), 2):
        flag = args[index]
        if flag not in _MACHINE_FLAGS:
            return (
                f"qemu_args {flag!r} is a raw QEMU argument, which can add any device, file or "
                "program (-device loader,file=..., -netdev tap,script=..., -chardev file,...); "
                "only -machine PROP=WORD settings are allowed"
            )
        if index + 1 >= len(args):
            return f"qemu_args {flag!r} has no value"
        value = args[index + 1]
        items = value.split(",")
        for position, item in enumerate(items):
            key, eq, word = item.partition("=")
            plain = (
                _PROP.fullmatch(key) is not None and _WORD.fullmatch(word) is not None
                if eq
                else position == 0 and _WORD.fullmatch(key) is not None
            )
            if not plain:
                return (
                    f"qemu_args {flag} {value!r}: {item!r} is not a PROP=WORD setting (a "
                    "word is letters, digits and _.+- not starting with '.'; no ',,' escapes)"
                )
    return None


def _key_line(text: str, key: str) -> int | None:
    pattern = re.compile(rf"""^\s*(?:-\s*)?["']?{re.escape(key)}["']?\s*:""")
    for number, line in enumerate(text.splitlines(), 1):
        if pattern.search(line):
            return number
    return None


def _path_line(text: str, region: Region) -> int | None:
    assert region.path is not None
    for number, line in enumerate(text.splitlines(), 1):
        if "path" in line and region.path in line:
            return number
    return _key_line(text, "memory")


def _qmp_finding_text(step: QmpCommand, findings: list[Finding]) -> str:
    shown = "; ".join(str(f) for f in findings[:3])
    more = f" (and {len(findings) - 3} more)" if len(findings) > 3 else ""
    return f"qmp {step.command} reaches the host: {shown}{more}"


def unsafe_uses(
    loaded: LoadedScenario, engine: str | None = None, policy: QmpPolicy | None = None
) -> list[UnsafeUse]:
    """Every use in ``loaded`` that needs ``--allow-unsafe``, in file order.

    ``engine``: the engine of the run (``qmp`` steps and ``qemu_args`` matter to the qemu
    engine alone); None checks for both (``validate``). ``policy``: the chosen binary's
    (``QemuFacts.qmp_policy()``); None judges ``qmp`` steps by the tables alone.
    """
    sc = loaded.scenario
    out: list[UnsafeUse] = []
    for index, region in enumerate(sc.vm.memory):
        if region.outside_run_dir:
            out.append(
                UnsafeUse(
                    f"vm.memory[{index}].path",
                    _path_line(loaded.text, region),
                    f"path {region.path!r} is a host file outside the run directory (a plain "
                    "file name keeps it inside)",
                )
            )
    if engine in (None, "qemu"):
        why = qemu_args_problem(sc.vm.qemu_args)
        if why:
            out.append(UnsafeUse("vm.qemu_args", _key_line(loaded.text, "qemu_args"), why))
        for index, step in enumerate(sc.steps):
            if not isinstance(step, QmpCommand):
                continue
            args = dict(step.arguments)
            findings = (
                policy.judge(step.command, args)
                if policy is not None
                else judge_without_schema(step.command, args)
            )
            if findings:
                line = loaded.step_lines[index] if index < len(loaded.step_lines) else None
                out.append(
                    UnsafeUse(f"steps[{index}]", line, _qmp_finding_text(step, findings), index + 1)
                )
    return sorted(out, key=lambda use: use.line or 0)
