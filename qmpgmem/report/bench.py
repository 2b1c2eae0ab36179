"""The shape of a bench figures file, as ``qmpgmem compare`` reads it.

Why defined here, by the reader: the benchmarks (``bench/*.py --json FILE``) are being given
one JSON shape; compare needs only this much of it, so a writer that emits at least these
fields can be compared without touching compare::

    {"kind": "bench", "schema_version": 1,            # both optional for a bare figures file
     "created": "2026-12-03T08:00:00Z", "host": {...},   # optional: the host fingerprint
     "figures": [
       {"name": "boot_rom_kvm", "value": 0.0399, "unit": "s",
        "better": "lower",                               # or "higher"; default "lower"
        "baseline": {"name": "boot_rom_tcg", "value": 0.0309}}   # optional
     ]}

``baseline`` is a figure measured beside this one in the same run (TCG for KVM, the ROM path
for firmware, docs/performance.md): when both files have it, compare judges the figure
relative to its baseline, which carries across hosts and load better than the raw value.
Unknown keys are kept and ignored, so the writer may add its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from qmpgmem.report.result import HostInfo

__all__ = ["BenchBaseline", "BenchDocument", "BenchFigure", "seconds"]

#: units whose values compare in seconds, with their factor to seconds
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


class BenchBaseline(BaseModel):
    """The figure a measurement is quoted beside, from the same run."""

    model_config = ConfigDict(extra="allow")

    name: str = ""
    value: float


class BenchFigure(BaseModel):
    """One measured figure."""

    model_config = ConfigDict(extra="allow")

    name: str
    value: float
    unit: str = ""
    better: Literal["lower", "higher"] = "lower"
    baseline: BenchBaseline | None = None


class BenchDocument(BaseModel):
    """A bench figures file: its figures, and the host when the writer recorded it."""

    model_config = ConfigDict(extra="allow")

    kind: Literal["bench"] = "bench"
    schema_version: Literal[1] = 1
    created: str | None = None
    host: HostInfo | None = None
    figures: list[BenchFigure]


def seconds(value: float, unit: str) -> float | None:
    """``value`` in seconds when ``unit`` is a time unit, else None."""
    factor = _SECONDS.get(unit)
    return None if factor is None else value * factor
