"""Subset matching of JSON values, for QMP returns and event data.

Why a subset: a scenario states what must be there; QEMU versions add fields freely.
"""

from __future__ import annotations

from typing import Any


def subset_mismatch(expected: Any, actual: Any, path: str = "") -> str | None:
    """None when ``expected`` is contained in ``actual``; else a sentence naming the spot.

    Dicts: every expected key present and matching. Lists: every expected element matches
    some element of ``actual`` (order-free). Scalars: equal.
    """
    here = path or "the value"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{here}: expected an object, got {type(actual).__name__}"
        for key, value in expected.items():
            if key not in actual:
                return f"{here}: key {key!r} is missing"
            why = subset_mismatch(value, actual[key], f"{path}.{key}" if path else key)
            if why is not None:
                return why
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return f"{here}: expected a list, got {type(actual).__name__}"
        for i, item in enumerate(expected):
            if all(subset_mismatch(item, a) is not None for a in actual):
                return f"{path}[{i}]: no element matches {item!r}"
        return None
    if expected != actual:
        return f"{here}: expected {expected!r}, got {actual!r}"
    return None
