"""Private run directories, the files in them, and the cleanup of those whose owner died.

Why an owner file: every exit path of qmpgmem removes its run directories (or keeps them as
artifacts elsewhere), but a SIGKILLed or hung-up runner cannot. Each directory records the
pid that made it; the next run removes directories whose owner is gone.

Also here: kept-artifact directories that never collide (:func:`exclusive_dir`) and the
backing files of ``file`` regions, opened the same way for both engines
(:func:`open_backing_file`; docs/security.md).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from qmpgmem.errors import VMLaunchError

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


def exclusive_dir(parent: Path, stem: str) -> Path:
    """A new 0700 directory ``parent/stem`` (or ``stem-2``, ``stem-3``...), never one that
    existed: ``mkdir`` is the reservation, so two runs can never share one."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in itertools.count(1):
        path = parent / (stem if n == 1 else f"{stem}-{n}")
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")  # pragma: no cover


def move_contents(src: Path, dest: Path) -> None:
    """Move every entry of ``src`` into the existing directory ``dest``, then remove ``src``.

    Why not ``shutil.move(src, dest)``: with ``dest`` existing it moves ``src`` *into* it.
    The owner file stays behind (and goes): kept artifacts are nobody's run directory, so
    a later ``reap_stale_run_dirs`` must never take them for one.
    """
    for entry in list(src.iterdir()):
        if entry.name == OWNER_FILE:
            entry.unlink(missing_ok=True)
        else:
            shutil.move(str(entry), dest / entry.name)
    with contextlib.suppress(OSError):
        src.rmdir()


@dataclass
class BackingFile:
    """The open backing file of one ``file`` region; ``close()`` ends qmpgmem's part in it.

    Why qmpgmem opens it (and QEMU gets ``/proc/self/fd/N``): QEMU's memory-backend-file
    opens ``mem-path`` following symlinks, creates or grows whatever is there and leaves it
    0644 by the umask. Opened here, the file is the one checked: never through a symlink
    (``O_NOFOLLOW``), created exclusively with mode 0600 or refused when it exists (unless
    the scenario says ``existing: use``), and never resized when it was not ours.
    """

    region_id: str
    path: Path
    fd: int
    size: int
    #: qmpgmem created the file (so it may remove it)
    created: bool
    #: remove the file in ``close()``: created by us, outside the run directory, not ``keep``
    remove: bool

    @property
    def proc_path(self) -> str:
        """The path another process that inherited ``fd`` (QEMU) opens the same file by."""
        return f"/proc/self/fd/{self.fd}"

    def close(self) -> None:
        """Close the fd; remove the file when qmpgmem made it for this run alone. Idempotent."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        if self.remove:
            self.remove = False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def backing_file_path(run_dir: Path, region_id: str, path: str | None) -> Path:
    """Where a file region's backing file is: ``path`` when absolute, else in ``run_dir``."""
    if path is not None and os.path.isabs(path):
        return Path(path)
    return run_dir / (path or f"{region_id}.mem")


def open_backing_file(
    run_dir: Path,
    region_id: str,
    size: int,
    *,
    path: str | None = None,
    existing: str = "refuse",
    keep: bool = False,
) -> BackingFile:
    """Create (or, with ``existing="use"``, open) the backing file of one ``file`` region.

    :raise VMLaunchError: the file exists and may not be used, is a symlink or not a
        regular file, is smaller than the region, or cannot be created.
    """
    target = backing_file_path(run_dir, region_id, path)
    flags = os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW
    created = True
    try:
        fd = os.open(target, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if existing != "use":
            raise VMLaunchError(
                f"region {region_id}: backing file {target} exists; qmpgmem creates its "
                "backing files and never writes into one it did not create (set "
                "existing: use to run on this file as it is)"
            ) from None
        created = False
        try:
            fd = os.open(target, flags)
        except OSError as exc:
            why = "it is a symlink" if exc.errno == errno.ELOOP else exc.strerror
            raise VMLaunchError(
                f"region {region_id}: cannot open backing file {target}: {why}"
            ) from exc
    except OSError as exc:
        raise VMLaunchError(
            f"region {region_id}: cannot create backing file {target}: {exc.strerror}"
        ) from exc
    file = BackingFile(region_id, target, fd, size, created, remove=False)
    try:
        st = os.fstat(fd)
        if created:
            os.ftruncate(fd, size)
        elif not stat.S_ISREG(st.st_mode):
            raise VMLaunchError(f"region {region_id}: backing file {target} is not a regular file")
        elif st.st_size < size:
            raise VMLaunchError(
                f"region {region_id}: backing file {target} has {st.st_size} bytes, the "
                f"region needs {size}; qmpgmem does not resize a file it did not create"
            )
    except OSError as exc:
        file.remove = created
        file.close()
        raise VMLaunchError(f"region {region_id}: backing file {target}: {exc.strerror}") from exc
    except VMLaunchError:
        file.close()
        raise
    file.remove = created and not keep and os.path.isabs(path or "")
    return file
