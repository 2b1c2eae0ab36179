"""What a stretch of guest memory holds, as the model knows it.

Why three values and not bytes: a region may be 2 GiB, and the pattern of a seed is a pure
function of the region offset (:func:`qmpgmem.guest.protocol.pattern_words`), so "pattern of
seed 7" describes any sub-range exactly. ``Unknown`` carries the reason, because a prediction
the model refuses to make must say why in the failure message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeAlias

__all__ = ["ZERO", "Attr", "Content", "Pattern", "Unknown", "Zero", "describe_content"]


@dataclass(frozen=True)
class Zero:
    """Every byte reads 0 (fresh anonymous/memfd memory, a punched or discarded range)."""

    def __str__(self) -> str:
        return "zero"


@dataclass(frozen=True)
class Pattern:
    """The word at region offset ``o`` is ``pattern_words(seed, o, 8)``."""

    seed: int

    def __str__(self) -> str:
        return f"pattern seed {self.seed}"


@dataclass(frozen=True)
class Unknown:
    """The model cannot say what is there; ``reason`` names the rule that gave up."""

    reason: str

    def __str__(self) -> str:
        return f"unknown ({self.reason})"


Content: TypeAlias = Zero | Pattern | Unknown

ZERO: Zero = Zero()


class Attr(StrEnum):
    """The KVM memory attribute of a page: which memory the guest's accesses resolve to."""

    SHARED = "shared"
    PRIVATE = "private"


def describe_content(segments: list[tuple[int, int, Content]]) -> str:
    """``"pattern seed 7 over [0x0, 0x10000), zero over [0x10000, 0x20000)"``."""
    return ", ".join(f"{c} over [{lo:#x}, {lo + size:#x})" for lo, size, c in segments)
