"""Where qmpgmem keeps what outlives a checkout: ``$XDG_CACHE_HOME/qmpgmem`` (~/.cache).

Why one function: the micro guest's images, the compiled hash helper, the lab's kernels and
the runs' durations all live under it; a fresh clone (CI) or a second checkout reuses them.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["user_cache"]


def user_cache(*parts: str) -> Path:
    """``$XDG_CACHE_HOME/qmpgmem/<parts>`` (default ``~/.cache``); not created here."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base, "qmpgmem", *parts)
