"""What each planned run took the last time it ran here, so ``run -j N`` starts the longest
runs first.

Why: with several runs at once the wall time is that of the slot which finishes last. In plan
order the library's two firmware boots (seconds each, against tenths for the rest) may start
last and run alone at the end; started first, the short runs fill the other slots beside
them (longest-processing-time-first scheduling). Only this host's own earlier runs know what
a run costs, so the figures are kept between runs, the way CTest keeps a cost file for its
``-j``. A run never seen before is taken as long and started first; with no history at all
the order is the plan's.

The file (``$XDG_CACHE_HOME/qmpgmem/durations.json``, ``run --durations FILE``) is a hint and
nothing else: a missing, unreadable or malformed one gives the plan's order, and reports are in
plan order whatever order the runs started in.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from qmpgmem.cachedir import user_cache
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import LoadedScenario

__all__ = ["DURATIONS_ENV", "Durations", "default_path", "longest_first", "run_key"]

log = logging.getLogger(__name__)

#: ``run --durations FILE``'s environment variable.
DURATIONS_ENV: Final = "QMPGMEM_DURATIONS"
_VERSION: Final = 1
#: entries kept at most; the oldest go first (a library of hundreds of scenarios fits)
_MAX_ENTRIES: Final = 5000


def default_path() -> Path:
    return user_cache("durations.json")


def run_key(loaded: LoadedScenario, opts: RunOptions) -> str:
    """What tells one planned run's cost from another's: the scenario file and name, the
    engine, the accelerator asked for and the pinned binary (``--matrix``)."""
    accel = opts.accel or loaded.scenario.vm.accel
    return "|".join(
        (os.path.abspath(loaded.path), loaded.scenario.name, opts.engine, accel, opts.qemu or "")
    )


class Durations:
    """Seconds per :func:`run_key`, read from and written back to ``path``."""

    def __init__(self, path: Path | None, seconds: dict[str, float] | None = None) -> None:
        self.path = path
        self.seconds: dict[str, float] = dict(seconds or {})
        self._recorded: dict[str, float] = {}

    @classmethod
    def load(cls, path: Path) -> Durations:
        """The history at ``path``; an empty one when there is none or it cannot be read."""
        return cls(path, _read(path))

    def cost(self, loaded: LoadedScenario, opts: RunOptions) -> float | None:
        return self.seconds.get(run_key(loaded, opts))

    def record(self, loaded: LoadedScenario, opts: RunOptions, seconds: float) -> None:
        key = run_key(loaded, opts)
        self.seconds[key] = self._recorded[key] = seconds

    def save(self) -> None:
        """Write what this run recorded over what the file holds now (another run may have
        written it since), atomically; a file that cannot be written is logged, not raised."""
        if self.path is None or not self._recorded:
            return
        merged = _read(self.path)
        for key in self._recorded:
            merged.pop(key, None)  # re-inserted last: the newest entries are kept
        merged.update(self._recorded)
        while len(merged) > _MAX_ENTRIES:
            merged.pop(next(iter(merged)))
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".durations-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"version": _VERSION, "seconds": merged}, f, indent=0)
                os.replace(tmp, self.path)
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError as exc:
            log.warning("could not write the runs' durations to %s: %s", self.path, exc)


def _read(path: Path) -> dict[str, float]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the runs' durations in %s: %s", path, exc)
        return {}
    seconds = doc.get("seconds") if isinstance(doc, dict) else None
    if not isinstance(seconds, dict) or doc.get("version") != _VERSION:
        log.warning("ignoring the runs' durations in %s: not a version-%d file", path, _VERSION)
        return {}
    return {
        k: float(v)
        for k, v in seconds.items()
        if isinstance(k, str)
        and isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and v >= 0
    }


def longest_first(
    runs: Sequence[tuple[LoadedScenario, RunOptions]], durations: Durations
) -> list[int]:
    """The plan's indices in the order to start them: runs never seen first (in plan order),
    then the known ones longest first (ties in plan order)."""
    costs = [durations.cost(loaded, opts) for loaded, opts in runs]
    return sorted(range(len(runs)), key=lambda i: (costs[i] is not None, -(costs[i] or 0.0), i))
