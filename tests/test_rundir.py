"""Run directories: private, owned, and reaped when their owner died."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from qmpgmem.rundir import OWNER_FILE, make_run_dir, reap_stale_run_dirs


def test_run_dir_is_private_and_owned(tmp_path: Path) -> None:
    d = make_run_dir("run", tmp_path)
    assert d.name.startswith("qmpgmem-run-")
    assert d.stat().st_mode & 0o777 == 0o700
    assert (d / OWNER_FILE).read_text().strip().isdigit()


def test_only_dirs_of_dead_owners_are_reaped(tmp_path: Path) -> None:
    mine = make_run_dir("run", tmp_path)
    # a directory made by a process that has exited since
    code = (
        "import sys; from pathlib import Path; from qmpgmem.rundir import make_run_dir; "
        f"print(make_run_dir('kvm', Path({str(tmp_path)!r})))"
    )
    dead = Path(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               check=True).stdout.strip())  # fmt: skip
    foreign = tmp_path / "qmpgmem-other"
    foreign.mkdir()  # no owner file: not ours to judge
    assert dead.exists()
    assert reap_stale_run_dirs(tmp_path) == [dead]
    assert mine.exists() and foreign.exists() and not dead.exists()
