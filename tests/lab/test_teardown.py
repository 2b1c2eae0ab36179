"""L1 is torn down on every path: timeout, QEMU failing to start, Ctrl-C, SIGTERM, SIGHUP,
and SIGKILL of the runner.

These boot a real QEMU under TCG exactly as the lab does, with the micro guest's PVH image
standing in for the lab kernel: it never reaches the lab's job, which is what a hung L1 looks
like, and needs no kernel build.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qmpgmem.lab.build import META_NAME, LabKernel
from qmpgmem.lab.initramfs import busybox
from qmpgmem.lab.machine import LabConfig, LabError, LabMachine
from qmpgmem.lab.paths import CACHE_ENV, lab_cache
from qmpgmem.rundir import PREFIX
from tests.conftest import our_qemu_pids

pytestmark = pytest.mark.qemu


def fake_kernel(tmp_path: Path, image: bytes) -> LabKernel:
    """A lab cache entry whose "kernel" is ``image`` (an ELF QEMU boots through PVH)."""
    busybox()  # in the real cache, downloaded once
    entry = tmp_path / "cache/kernels/fake"
    entry.mkdir(parents=True)
    (entry / "bzImage").write_bytes(image)
    meta = {
        "package": "linux-source-0.0", "version": "0.0-1", "release": "0.0-fake",
        "build_seconds": 0.0, "selftest_build_seconds": 0.0, "objects": 0,
    }  # fmt: skip
    (entry / META_NAME).write_text(json.dumps(meta))
    (tmp_path / "cache/busybox").symlink_to(lab_cache() / "busybox")
    kernel = LabKernel.load(entry)
    assert kernel is not None
    return kernel


@pytest.fixture
def hung_kernel(tmp_path: Path, qemu_binary: str) -> LabKernel:
    """A lab cache entry whose "kernel" is the micro guest: L1 that never runs its job."""
    from qmpgmem.guest.image import guest_image

    return fake_kernel(tmp_path, guest_image("pvh").read_bytes())


#: A PVH entry (XEN_ELFNOTE_PHYS32_ENTRY) that ends the machine at once: ``int3`` with an
#: empty IDT triple-faults; ``out 0xfe, 0x64`` resets the machine through the keyboard
#: controller, a reset without a fault (the control).
_PVH_ELF = """
    .section .note.Xen, "a", @note
    .align 4
    .long 4, 4, 18
    .asciz "Xen"
    .long _start
    .text
    .globl _start
    .code32
_start:
    {body}
1:  hlt
    jmp 1b
idt0:
    .word 0
    .long 0
"""
ENDINGS = {
    "triple fault": "lidt idt0; int3",
    "keyboard-controller reset": "mov $0xfe, %al; out %al, $0x64",
}


def pvh_elf(tmp_path: Path, body: str) -> bytes:
    if shutil.which("as") is None or shutil.which("ld") is None:
        pytest.skip("binutils (as, ld) are needed to build the test kernel")
    src, obj, elf = tmp_path / "end.S", tmp_path / "end.o", tmp_path / "end.elf"
    src.write_text(_PVH_ELF.format(body=body))
    subprocess.run(["as", "--32", "-o", obj, src], check=True, capture_output=True)
    subprocess.run(
        ["ld", "-m", "elf_i386", "-Ttext", "0x100000", "-o", elf, obj],
        check=True,
        capture_output=True,
    )
    return elf.read_bytes()


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_a_triple_fault_of_l1_is_told_apart_from_a_stop(
    tmp_path: Path, qemu_binary: str, no_leftovers: None, ending: str
) -> None:
    """With -no-reboot both end QEMU with status 0 and a silent console; only QEMU's reset
    log tells them apart, and the error says which (a triple fault is retried: cli/lab.py)."""
    kernel = fake_kernel(tmp_path, pvh_elf(tmp_path, ENDINGS[ending]))
    config = LabConfig(kernel=kernel, timeout=60.0, memory_mib=512, cpus=1)
    with LabMachine(config) as lab:
        with pytest.raises(LabError, match="did not boot to its job") as err:
            lab.run("true\n", lambda kind, line: None)
        kept = {p.name for p in lab.keep_logs(tmp_path / "logs")}
    assert "qemu-reset.log" in kept
    said = str(err.value).splitlines()[0]
    if ending == "triple fault":
        assert "(L1's CPU took a triple fault, logged in qemu-reset.log)" in said, said
    else:
        assert "triple fault" not in said and ": its QEMU exited with status 0" in said, said


def test_timeout_stops_l1_and_removes_everything(
    hung_kernel: LabKernel, no_leftovers: None
) -> None:
    config = LabConfig(kernel=hung_kernel, timeout=10.0, memory_mib=512, cpus=1)
    t0 = time.monotonic()
    with pytest.raises(LabError, match="did not finish within 10 s"), LabMachine(config) as lab:
        lab.run("true\n", lambda kind, line: None)
    assert time.monotonic() - t0 < 20


def test_qemu_that_cannot_boot_is_an_error_with_its_words(
    hung_kernel: LabKernel, no_leftovers: None
) -> None:
    hung_kernel.bzimage.write_text("not a kernel\n")
    config = LabConfig(kernel=hung_kernel, timeout=30.0, memory_mib=512, cpus=1)
    with pytest.raises(LabError, match="did not boot to its job") as err, LabMachine(config) as lab:
        lab.run("true\n", lambda kind, line: None)
    assert "QEMU said" in str(err.value)


def test_failure_keeps_the_console_log_where_asked(
    hung_kernel: LabKernel, tmp_path: Path, no_leftovers: None
) -> None:
    config = LabConfig(kernel=hung_kernel, timeout=5.0, memory_mib=512, cpus=1)
    with LabMachine(config) as lab:
        with pytest.raises(LabError):
            lab.run("true\n", lambda kind, line: None)
        kept = lab.keep_logs(tmp_path / "logs")
    assert {p.name for p in kept} == {"console.log", "qemu.log", "qemu-reset.log", "argv.txt"}
    assert "-cpu max" in (tmp_path / "logs/argv.txt").read_text()


def _start_lab_run(tmp_path: Path, kernel: LabKernel) -> subprocess.Popen[str]:
    env = dict(os.environ, **{CACHE_ENV: str(tmp_path / "cache"), "TMPDIR": str(tmp_path / "tmp")})
    (tmp_path / "tmp").mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "qmpgmem", "lab", "run", "--l1-memory", "512", "--l1-cpus", "1",
         "--timeout", "120", "--lab-logs", str(tmp_path / "logs"), "scenarios/basic"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # L1's QEMU is up once the booting line is out
        line = proc.stderr.readline()
        if "booting L1" in line:
            break
    _wait_for(lambda: bool(_lab_qemus(tmp_path)), 30)
    return proc


def _lab_qemus(tmp_path: Path) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-f", f"qemu-system.*{tmp_path}"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


def _wait_for(cond: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_signal_to_lab_run_stops_l1(hung_kernel: LabKernel, tmp_path: Path, sig: int) -> None:
    proc = _start_lab_run(tmp_path, hung_kernel)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted: L1 was stopped" in err
    assert "Traceback" not in err
    assert _lab_qemus(tmp_path) == []
    assert list((tmp_path / "tmp").glob(f"{PREFIX}*")) == []


def test_sigkill_of_the_runner_takes_l1_along(hung_kernel: LabKernel, tmp_path: Path) -> None:
    proc = _start_lab_run(tmp_path, hung_kernel)
    proc.kill()
    proc.communicate(timeout=30)
    _wait_for(lambda: _lab_qemus(tmp_path) == [], 10)  # the parent-death signal
    left = list((tmp_path / "tmp").glob(f"{PREFIX}lab-*"))
    assert left, "a SIGKILLed runner cannot clean up: its run directory stays until the next run"
    LabMachine(LabConfig(kernel=hung_kernel), run_dir_parent=tmp_path / "tmp").close()
    assert list((tmp_path / "tmp").glob(f"{PREFIX}*")) == []
    assert not our_qemu_pids() & set(_lab_qemus(tmp_path))
