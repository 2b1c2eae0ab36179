"""What one pytest session runs each scenario on: engines x QEMU binaries, and their ids.

Why ids carry the engine, the QEMU version and the accelerator: a CI server keys results on
the test's name; ``basic-smoke`` from a session on QEMU 10.0.2 and one on 11.1.3 (or on the
kvm engine) must not overwrite each other. The scheme, also in docs/pytest-plugin.md:

- qemu engine: ``qemu-<version>-<accel>``, e.g. ``basic-smoke[qemu-10.0.2-kvm]``; a version
  QEMU does not tell is ``unknown``; two binaries of the same version are told apart by
  ``-2``, ``-3``... in the order they were given;
- kvm engine: ``kvm``, e.g. ``basic-smoke[kvm]`` (no QEMU, always KVM).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest

if TYPE_CHECKING:  # imported when first used: pytest loads this plugin in every run
    from qmpgmem.runner import HostContext
    from qmpgmem.scenario.model import Scenario

__all__ = ["ENGINES", "STATE", "PluginState", "Variant", "version_labels"]

ENGINES: Final = ("qemu", "kvm")
_UNSAFE = re.compile(r"[^\w.+]+")


@dataclass(frozen=True)
class Variant:
    """One engine (and for qemu, one binary) a scenario item runs on."""

    engine: str
    accel: str  # kvm or tcg, as the run resolves it
    qemu: str | None = None  # the binary, qemu engine only (None: there is none)
    label: str = ""  # the binary's version label, qemu engine only

    @property
    def id(self) -> str:
        if self.engine == "kvm":
            return "kvm"
        return f"qemu-{self.label}-{self.accel}"


def version_labels(binaries: list[str], versions: dict[str, str | None]) -> dict[str, str]:
    """Each binary's label in item ids: its version, ``unknown``, ``-2`` for a repeat."""
    labels: dict[str, str] = {}
    seen: dict[str, int] = {}
    for binary in binaries:
        base = _UNSAFE.sub("_", versions.get(binary) or "unknown").strip("_") or "unknown"
        seen[base] = seen.get(base, 0) + 1
        labels[binary] = base if seen[base] == 1 else f"{base}-{seen[base]}"
    return labels


@dataclass
class PluginState:
    """The session's choices (from the command line and ini) and the host, probed lazily."""

    engines: list[str]
    qemu: list[str]  # as given; empty: qemu-system-x86_64 on PATH
    accel: str | None
    artifacts: Path
    patterns: list[str]  # ini qmpgmem_paths
    #: --qmpgmem-allow-unsafe: run what reaches the host (docs/security.md)
    allow_unsafe: bool = False
    #: under pytest-xdist, on the controller: each worker's testsuite properties
    worker_properties: list[list[tuple[str, str]]] = field(default_factory=list)
    _collect_ctx: HostContext | None = field(default=None, repr=False)
    _run_ctx: HostContext | None = field(default=None, repr=False)

    def collect_context(self) -> HostContext:
        """Cheap host facts for ids (KVM usable, ``qemu --version``); no QEMU is started."""
        from qmpgmem.session import host_context

        if self._collect_ctx is None:
            self._collect_ctx = asyncio.run(host_context(self.qemu or None, probe=False))
        return self._collect_ctx

    def run_context(self) -> HostContext:
        """The probed host (QMP schema, guest_memfd support), once, at the first run."""
        from qmpgmem.session import host_context

        if self._run_ctx is None:
            self._run_ctx = asyncio.run(host_context(self.qemu or None, probe=True))
        return self._run_ctx

    @property
    def host_context(self) -> HostContext | None:
        """The most complete context obtained so far, or None before any."""
        return self._run_ctx or self._collect_ctx

    def variants(self, scenario: Scenario) -> list[Variant]:
        """The variants of ``scenario``, engines in the order given, binaries within qemu."""
        from qmpgmem.runner import resolve_accel

        ctx = self.collect_context()
        accel = resolve_accel(self.accel or scenario.vm.accel, ctx)
        out: list[Variant] = []
        for engine in self.engines:
            if engine == "kvm":
                out.append(Variant("kvm", "kvm"))
                continue
            labels = version_labels(ctx.qemu_binaries, ctx.qemu_versions)
            if not labels:  # no QEMU at all: one item, whose run says so
                out.append(Variant("qemu", accel, None, "unknown"))
            out += [Variant("qemu", accel, b, label) for b, label in labels.items()]
        return out

    def context_for(self, variant: Variant) -> HostContext:
        """The probed host as one variant sees it: a qemu item has its own binary only."""
        ctx = self.run_context()
        if variant.engine != "qemu":
            return ctx
        return replace(ctx, qemu_binaries=[variant.qemu] if variant.qemu else [])


#: The session's PluginState, set in pytest_configure when --qmpgmem is given.
STATE: Final = pytest.StashKey[PluginState]()
