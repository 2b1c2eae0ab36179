"""Where the lab keeps what it fetches and builds: ``$XDG_CACHE_HOME/qmpgmem/lab`` (~/.cache).

Why outside the checkout: a kernel build takes a quarter of an hour; a fresh clone (CI) or a
second checkout reuses it. ``QMPGMEM_LAB_CACHE`` moves the whole tree.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from qmpgmem.cachedir import user_cache

__all__ = ["CACHE_ENV", "lab_cache"]

CACHE_ENV: Final = "QMPGMEM_LAB_CACHE"


def lab_cache() -> Path:
    """The root of the lab's cache (not created here)."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override)
    return user_cache("lab")
