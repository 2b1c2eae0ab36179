"""The scenario library that ships with qmpgmem, and the paths a run takes when given none.

Why a function and not a path written into the CLI: in a checkout the library is the
repository's ``scenarios/``; in an installed wheel it is package data under
``qmpgmem/data/scenarios``. The package reaches both the same way — in the checkout
``qmpgmem/data/scenarios`` is a symlink to ``../../scenarios``, and building the wheel copies
the files it points at — so nothing here asks where qmpgmem was installed from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from qmpgmem.errors import SetupError

__all__ = ["LOCAL_LIBRARY", "default_paths", "library_path"]

#: What a run in a checkout (or in a project with its own library) means by default.
LOCAL_LIBRARY: Final = Path("scenarios")

_PACKAGED: Final = Path(__file__).parent / "data" / "scenarios"


def library_path() -> Path:
    """The directory of the shipped scenario library (absolute, symlinks resolved).

    :raise SetupError: this installation lacks the library (a wheel built without its
        package data).
    """
    path = _PACKAGED.resolve()
    if not path.is_dir():
        raise SetupError(
            f"the scenario library is not at {path}: this qmpgmem installation lacks its "
            "package data; reinstall qmpgmem, or name scenario files or directories"
        )
    return path


def default_paths() -> tuple[Path, ...]:
    """The paths of a run or validation given none: ``./scenarios`` when that directory
    exists (kept relative, so reports name ``scenarios/...``), else the shipped library.

    :raise SetupError: neither exists (see :func:`library_path`).
    """
    if LOCAL_LIBRARY.is_dir():
        return (LOCAL_LIBRARY,)
    return (library_path(),)
