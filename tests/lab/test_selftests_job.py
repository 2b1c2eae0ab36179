"""The selftest job's shell, run here with stand-in selftests: a run that hangs leaves what its
threads did before the deadline in its result; one that ends in time leaves nothing, and no
watcher outlives the job."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from qmpgmem.lab.build import LabKernel
from qmpgmem.lab.selftests import (
    SNAPSHOT_LEGEND,
    SelftestRun,
    collect,
    default_runs,
    job_script,
    select_runs,
    snapshot_delay,
)
from qmpgmem.report.result import Status

#: A "selftest" of two threads that both sleep far past any deadline here.
HANGING = f"""#!/bin/sh
exec {sys.executable} -c 'import threading, time
threading.Thread(target=time.sleep, args=(60,)).start()
time.sleep(60)'
"""


def test_a_hanging_selftest_leaves_its_threads_and_a_quick_one_nothing(tmp_path: Path) -> None:
    kernel = LabKernel(tmp_path, "linux-source-7.2", "7.2.13-1", "7.2.13-qmpgmem-lab", 1, 1, 1)
    kernel.selftests.mkdir()
    for name, text in (("hang_test", HANGING), ("quick_test", "#!/bin/sh\necho ok 1 - quick\n")):
        (kernel.selftests / name).write_text(text)
        (kernel.selftests / name).chmod(0o755)
    runs = [SelftestRun("quick_test", timeout=60), SelftestRun("hang_test", timeout=4)]
    script = job_script(kernel, runs).replace("cd /run/tmp", f"cd {tmp_path}")
    out = tmp_path / "out"
    out.mkdir()
    job = subprocess.Popen(
        ["sh", "-c", script],
        env={**os.environ, "QMPGMEM_LAB_OUT": str(out)},
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert job.wait(timeout=60) == 0
    left = subprocess.run(["pgrep", "-s", str(job.pid)], capture_output=True, text=True).stdout
    assert left == "", f"processes of the job's session still running: {left}"

    quick, hang = collect(out, runs, kernel)
    assert quick.status is Status.PASSED and quick.warnings == []
    assert (out / "quick_test.hang").read_text() == ""  # its watcher was stopped, silent
    assert hang.status is Status.TIMEOUT
    assert snapshot_delay(4) == 2
    assert f"its threads 2 s after its start ({SNAPSHOT_LEGEND}): " in hang.reason
    assert re.search(r"\d+ python3?[\w.]*: S \d+ \d+ \d+; wchan \w+ \| ", hang.reason), hang.reason
    (noted,) = hang.warnings
    assert noted.count("round 1 task") == 2 and noted.count("round 2 task") == 2, noted


#: A "selftest" that fails on its second run and passes otherwise (a counter file in the cwd).
SECOND_FAILS = """#!/bin/sh
n=$(($(cat runs 2>/dev/null || echo 0) + 1)); echo $n > runs
if [ $n = 2 ]; then echo "not ok 1 - second"; exit 1; fi
echo "ok 1 - fine"
"""


def test_repeats_are_folded_and_flaky_when_they_differ(tmp_path: Path) -> None:
    kernel = LabKernel(tmp_path, "linux-source-7.2", "7.2.13-1", "7.2.13-qmpgmem-lab", 1, 1, 1)
    kernel.selftests.mkdir()
    (kernel.selftests / "flaky_test").write_text(SECOND_FAILS)
    (kernel.selftests / "flaky_test").chmod(0o755)
    runs = [SelftestRun("flaky_test", timeout=30)]
    script = job_script(kernel, runs, repeat=3).replace("cd /run/tmp", f"cd {tmp_path}")
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "QMPGMEM_LAB_OUT": str(out)}
    subprocess.run(["sh", "-c", script], env=env, check=True, stdout=subprocess.DEVNULL)
    (result,) = collect(out, runs, kernel, repeat=3)
    assert result.status is Status.FLAKY
    assert result.repeats is not None
    assert result.repeats.statuses == [Status.PASSED, Status.FAILED, Status.PASSED]
    assert result.reason.startswith("passed 2, failed 1 of 3 runs; run 2 failed: 1 failed: second")
    assert result.id == "flaky_test [selftest]"


def test_k_selects_runs_by_name() -> None:
    runs = default_runs(2)
    assert [r.name for r in select_runs(runs, "conversions_test -n")] == [
        "private_mem_conversions_test -n 2 -m 2"
    ]
    assert select_runs(runs, None) == runs
    assert select_runs(runs, "no such test") == []
