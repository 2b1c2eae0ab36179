"""Private run directories, and the cleanup of those whose owner died.

Why an owner file: every exit path of qmpgmem removes its run directories (or keeps them as
artifacts elsewhere), but a SIGKILLed or hung-up runner cannot. Each directory records the
pid that made it; the next run removes directories whose owner is gone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "qmpgmem-"
OWNER_FILE = "qmpgmem.owner"


def make_run_dir(kind: str, parent: Path | None = None) -> Path:
    """A new 0700 directory ``qmpgmem-<kind>-XXXX`` owned by this process."""
    path = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-", dir=parent))
    os.chmod(path, 0o700)
    (path / OWNER_FILE).write_text(f"{os.getpid()}\n")
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def reap_stale_run_dirs(parent: Path | None = None) -> list[Path]:
    """Remove run directories whose owner process no longer exists; returns what went."""
    root = Path(parent or tempfile.gettempdir())
    removed = []
    for path in root.glob(f"{PREFIX}*"):
        owner = path / OWNER_FILE
        try:
            pid = int(owner.read_text().strip())
        except (OSError, ValueError):
            continue  # not ours, or not finished being made
        if pid != os.getpid() and not _alive(pid):
            with contextlib.suppress(OSError):
                shutil.rmtree(path)
                removed.append(path)
                log.info("removed %s left by process %d", path, pid)
    return removed


def remove_own_run_dirs(parent: Path | None = None) -> list[Path]:
    """Remove the run directories this process made and still owns: what an interrupted
    command's teardown could not get to (kept artifacts were moved elsewhere already)."""
    root = Path(parent or tempfile.gettempdir())
    removed = []
    for path in root.glob(f"{PREFIX}*"):
        try:
            pid = int((path / OWNER_FILE).read_text().strip())
        except (OSError, ValueError):
            continue
        if pid == os.getpid():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed
