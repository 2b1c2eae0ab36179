"""One L1 boot that runs one job: QEMU TCG with -cpu max, the lab kernel and initramfs, the
host root read-only over 9p, a writable share for the job and its results.

Why a job per boot: L1 boots in a few seconds and powers off when its job ends, so there is
no long-lived VM to manage, and the exit status travels back through a file in the share.
Why teardown is this careful: a lab run lasts minutes and is often interrupted; QEMU runs in
its own process group with a parent-death signal (a SIGKILLed runner takes L1 with it), every
other exit path (Ctrl-C, SIGTERM, SIGHUP, a timeout, L1 panicking or hanging) ends in
``close()``, which kills the group and removes the run directory. What L1 printed is kept as
``console.log`` wherever the caller asks, and always when the job did not finish.

Why QEMU logs CPU resets (``-d cpu_reset``, into ``qemu-reset.log``): when L1's emulated CPU
triple-faults, QEMU with ``-no-reboot`` exits 0 and L1's console simply stops, like a
clean power-off in the middle of the job. QEMU's reset log says "Triple fault" then, with the
registers of each reset, so the error can say how L1 ended.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Final, Literal

from qmpgmem.engines.qemu.process import dying_with_parent
from qmpgmem.errors import EngineError, SetupError
from qmpgmem.lab.build import LabKernel
from qmpgmem.lab.initramfs import build_initramfs
from qmpgmem.rundir import make_run_dir, reap_stale_run_dirs

__all__ = ["LabConfig", "LabError", "LabMachine", "LabOutcome", "LineKind", "qemu_argv"]

LineKind = Literal["job", "l1"]
OnLine = Callable[[LineKind, str], None]

#: The share's path inside L1 (the job's chroot); init.sh mounts it there.
SHARE_IN_L1: Final = "/run/qmpgmem-lab"
KERNEL_ARGS: Final = "console=ttyS0 panic=-1 quiet loglevel=4 qmpgmem.lab=tcg"
_MARKER: Final = re.compile(r"QMPGMEM-LAB-(INIT|READY|JOB-END|FAILED|WARNING)\b(.*)")
#: What L1's console shows when its kernel dies; the line is kept in the error.
_PANIC: Final = re.compile(r"Kernel panic|BUG: |Oops: |general protection fault")
#: What QEMU's ``-d cpu_reset`` log says when the emulated CPU triple-faults.
TRIPLE_FAULT: Final = "Triple fault"


class LabError(EngineError):
    """L1 did not finish its job: it failed to boot, panicked, hung or was interrupted."""


@dataclass(frozen=True)
class LabConfig:
    """How L1 is booted. ``qemu`` is the L0 QEMU (the host's), independent of what the job
    runs inside L1."""

    kernel: LabKernel
    qemu: str = "qemu-system-x86_64"
    cpus: int = 2
    memory_mib: int = 4096
    numa_nodes: int = 1
    timeout: float = 1800.0
    extra_kernel_args: str = ""


def qemu_argv(
    config: LabConfig, initrd: Path, share: Path, reset_log: Path | None = None
) -> list[str]:
    """The L0 QEMU command line (pure; tested without booting); ``reset_log``: where QEMU
    logs each CPU reset, a triple fault among them."""
    argv = [
        config.qemu, "-accel", "tcg,thread=multi", "-machine", "q35", "-cpu", "max",
        "-smp", str(config.cpus), "-m", f"{config.memory_mib}M",
        "-nodefaults", "-no-reboot", "-display", "none", "-serial", "stdio", "-monitor", "none",
        "-kernel", str(config.kernel.bzimage), "-initrd", str(initrd),
        "-append", f"{KERNEL_ARGS} {config.extra_kernel_args}".strip(),
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={_opt(str(share))},mount_tag=lab,security_model=none,multidevs=remap",
    ]  # fmt: skip
    if reset_log is not None:
        argv += ["-d", "cpu_reset", "-D", str(reset_log)]
    if config.numa_nodes > 1:
        if config.memory_mib % config.numa_nodes or config.cpus % config.numa_nodes:
            raise SetupError("lab: memory and CPUs must divide evenly among the NUMA nodes")
        per_node = config.memory_mib // config.numa_nodes
        cpus_per_node = config.cpus // config.numa_nodes
        for node in range(config.numa_nodes):
            first = node * cpus_per_node
            argv += [
                "-object", f"memory-backend-ram,id=lab-mem{node},size={per_node}M",
                "-numa", f"node,nodeid={node},memdev=lab-mem{node},"
                f"cpus={first}-{first + cpus_per_node - 1}",
            ]  # fmt: skip
    return argv


def _opt(value: str) -> str:
    """A QEMU option value with commas doubled (QEMU's escape), so a path cannot add options."""
    return value.replace(",", ",,")


@dataclass
class LabOutcome:
    """How L1's job ended, with times measured on the host."""

    rc: int
    boot_seconds: float | None  # QEMU start to the READY marker (the job can start)
    job_seconds: float | None
    wall_seconds: float
    kernel_release: str = ""
    console_tail: list[str] = field(default_factory=list)


class _Interrupted(BaseException):
    """SIGTERM or SIGHUP while L1 runs: handled like Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class LabMachine:
    """Boot L1 once, run ``job`` (a POSIX shell script) inside, and tear everything down."""

    def __init__(self, config: LabConfig, run_dir_parent: Path | None = None) -> None:
        self.config = config
        reap_stale_run_dirs(run_dir_parent)
        self.run_dir = make_run_dir("lab", run_dir_parent)
        self.share = self.run_dir / "share"
        self.share.mkdir()
        self.console_log = self.run_dir / "console.log"
        self.qemu_log = self.run_dir / "qemu.log"
        self.reset_log = self.run_dir / "qemu-reset.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._closed = False

    def __enter__(self) -> LabMachine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def out_dir(self) -> Path:
        """Where the job writes its results (``$QMPGMEM_LAB_OUT`` inside L1)."""
        return self.share / "out"

    def run(self, job: str, on_line: OnLine) -> LabOutcome:
        """Boot, run ``job``, wait for L1 to power off; raises LabError when L1 did not
        finish the job, with the console's last lines."""
        self.out_dir.mkdir(exist_ok=True)
        header = f"export QMPGMEM_LAB_OUT={SHARE_IN_L1}/out\ncd {shlex.quote(os.getcwd())}\n"
        (self.share / "job.sh").write_text(header + job)
        argv = qemu_argv(self.config, build_initramfs(), self.share, self.reset_log)
        (self.run_dir / "argv.txt").write_text(shlex.join(argv) + "\n")
        with _signals_interrupt():
            return self._boot_and_wait(argv, on_line)

    def _boot_and_wait(self, argv: list[str], on_line: OnLine) -> LabOutcome:
        t0 = time.monotonic()
        deadline = t0 + self.config.timeout
        with self.qemu_log.open("wb") as err:
            try:
                command, preexec_fn = dying_with_parent(argv)
                self.proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                    process_group=0, preexec_fn=preexec_fn,
                )  # fmt: skip
            except OSError as exc:
                raise SetupError(f"cannot run the lab's QEMU {argv[0]}: {exc}") from exc
        assert self.proc.stdout is not None
        ready = job_end = None
        tail: list[str] = []
        release = ""
        in_job = False
        with self.console_log.open("w") as console:
            for line in _lines(self.proc.stdout, deadline):
                console.write(line + "\n")
                console.flush()
                tail = [*tail[-39:], line]
                marker = _MARKER.search(line)
                if marker is None:
                    kind: LineKind = "job" if in_job else "l1"
                    if _PANIC.search(line):
                        kind = "l1"
                    on_line(kind, line)
                    continue
                what = marker.group(1)
                if what == "INIT":
                    release = marker.group(2).partition("kernel=")[2].strip()
                elif what == "READY":
                    ready = time.monotonic() - t0
                    in_job = True
                elif what == "JOB-END":
                    job_end = time.monotonic() - t0
                    in_job = False
                on_line("l1", line)
        timed_out = time.monotonic() >= deadline and self.proc.poll() is None
        if not timed_out:  # the console closed: let QEMU finish exiting, to read its status
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self._stop()
        wall = time.monotonic() - t0
        rc_file = self.share / "rc"
        if timed_out:
            raise LabError(
                self._failure(f"L1 did not finish within {self.config.timeout:.0f} s", tail)
            )
        if job_end is None or not rc_file.is_file():
            # a death (retried once by the CLI: _KERNEL_DIED) or a plain stop of QEMU
            panic = next((ln for ln in tail if _PANIC.search(ln)), None)
            exited = f"its QEMU exited with status {self.proc.returncode}"
            if panic is None and self.triple_faulted():
                panic = f"L1's CPU took a triple fault, logged in {self.reset_log.name}"
                why = panic
            elif panic is not None:
                why = f"L1's kernel died: {panic}"
            else:
                why = f"L1 stopped before its job ended: {exited}"
            if ready is None:
                why = "L1 did not boot to its job" + (f" ({panic})" if panic else f": {exited}")
            raise LabError(self._failure(why, tail))
        return LabOutcome(
            rc=int(rc_file.read_text().strip() or "1"),
            boot_seconds=ready,
            job_seconds=None if ready is None else job_end - ready,
            wall_seconds=wall,
            kernel_release=release,
            console_tail=tail,
        )

    def _failure(self, why: str, tail: list[str]) -> str:
        qemu_said = self.qemu_log.read_text(errors="replace").strip().splitlines()[-5:]
        shown = "\n  ".join(tail[-12:]) or "(nothing)"
        text = f"{why}; L1's console ended with:\n  {shown}"
        if qemu_said:
            text += "\n  QEMU said: " + " / ".join(qemu_said)
        return text

    def triple_faulted(self) -> bool:
        """Whether QEMU logged a triple fault of L1's CPU."""
        try:
            return TRIPLE_FAULT in self.reset_log.read_text(errors="replace")
        except OSError:
            return False

    def keep_logs(self, dest: Path) -> list[Path]:
        """Copy console.log, qemu.log, qemu-reset.log and argv.txt to ``dest``; returns the
        copies."""
        dest.mkdir(parents=True, exist_ok=True)
        kept = []
        logs = (self.console_log, self.qemu_log, self.reset_log, self.run_dir / "argv.txt")
        for path in logs:
            if path.is_file():
                kept.append(Path(shutil.copy2(path, dest / path.name)))
        return kept

    def _stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        # the group may have outlived its leader (none known today): end it all the same
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        """Idempotent: L1's QEMU group killed and reaped, the run directory removed."""
        if self._closed:
            return
        self._closed = True
        try:
            self._stop()
        finally:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _lines(stream: object, deadline: float) -> Iterator[str]:
    """Console lines as they arrive, until EOF or the deadline."""
    fd = stream.fileno()  # type: ignore[attr-defined]
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        ready, _, _ = select.select([fd], [], [], min(left, 1.0))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            if buf:
                yield buf.decode(errors="replace").rstrip("\r")
            return
        buf += chunk
        *complete, buf = buf.split(b"\n")
        for raw in complete:
            yield raw.decode(errors="replace").rstrip("\r")


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise in the main thread like Ctrl-C, so ``finally`` tears down."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    except _Interrupted as exc:
        raise KeyboardInterrupt(f"signal {exc.signum}") from None
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
