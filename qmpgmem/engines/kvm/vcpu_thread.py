"""The vCPU thread: KVM_RUN in a loop, each exit handled in Python.

Why a thread: KVM_RUN blocks until the guest needs the VMM, and the engine's callers are
asyncio coroutines. The thread emulates the only devices the micro guest uses — COM1
(:mod:`.serial`) and isa-debug-exit on port 0xf4 — and hands KVM_EXIT_HYPERCALL to a callback.

HLT: the VM has no in-kernel irqchip, so a guest ``hlt`` is a KVM_EXIT_HLT here. At the guest's
idle ``hlt`` (the RIP the ROM header names, ``idle_rip``) the thread waits for the next
request, then resumes the guest after the ``hlt``, as an interrupt would; any other ``hlt``
(interrupts off, e.g. after a FAULT line) ends the vCPU.

Stopping: ``stop()`` sets ``kvm_run.immediate_exit`` (the next KVM_RUN returns at once), wakes
a thread that waits for guest input, and sends the thread a real-time signal so a KVM_RUN that
is already under way returns with EINTR (a guest spinning without exits cannot hold it). The
signal's handler is installed once, from the main thread; without it only the first two
mechanisms apply.

Per-exit cost matters (a byte of guest output is one exit, ~13 µs here): the loop keeps its
state in locals and answers the common exits (THR write, LSR read) without a call into the
UART object where it can.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import errno
import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm import sys as ksys
from qmpgmem.engines.kvm.objects import Vcpu
from qmpgmem.engines.kvm.serial import COM1, Uart16550

log = logging.getLogger(__name__)

DEBUG_EXIT_PORT: Final = 0xF4
KICK_SIGNAL: Final = signal.SIGRTMIN + 6
_kick_installed = False


def install_kick_signal() -> bool:
    """Install a no-op handler for the kick signal; True if it is (or already was) there."""
    global _kick_installed
    if _kick_installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    current = signal.getsignal(KICK_SIGNAL)
    if current not in (signal.SIG_DFL, None):
        _kick_installed = callable(current)
        return _kick_installed
    signal.signal(KICK_SIGNAL, _ignore)
    _kick_installed = True
    return True


def _ignore(signum: int, frame: object) -> None:
    """The kick's only job is to make KVM_RUN return EINTR."""


class EndReason(enum.StrEnum):
    """Why the vCPU thread stopped."""

    STOPPED = "stopped"  # the engine asked
    DEBUG_EXIT = "debug-exit"  # the guest wrote to isa-debug-exit
    HALTED = "halted"  # HLT with interrupts off: nothing can wake it
    SHUTDOWN = "shutdown"  # triple fault
    FAILED = "failed"  # an exit the VMM cannot handle, or KVM_RUN failed


@dataclass(frozen=True)
class VcpuEnd:
    reason: EndReason
    detail: str = ""
    #: isa-debug-exit: the value written; QEMU exits with (value << 1) | 1.
    exit_value: int | None = None

    @property
    def exit_status(self) -> int | None:
        return None if self.exit_value is None else (self.exit_value << 1) | 1


HypercallHandler = Callable[[abi._kvm_run_hypercall], None]
#: (vcpu id, the MMIO exit) -> True when handled (the local APIC page, see smp.py)
MmioHandler = Callable[[int, abi._kvm_run_mmio], bool]
#: How long an idle guest waits for input before it is resumed anyway (it halts again).
IDLE_WAIT: Final = 1.0


class VcpuRunner:
    """Runs one vCPU in a worker thread until the guest ends or ``stop()`` is called."""

    def __init__(
        self,
        vcpu: Vcpu,
        uart: Uart16550,
        on_hypercall: HypercallHandler,
        on_end: Callable[[VcpuEnd], None],
        on_mmio: MmioHandler | None = None,
        idle_rip: int | None = None,
    ) -> None:
        """``idle_rip``: the RIP after the guest's idle ``hlt`` (None: every HLT ends it)."""
        self._vcpu = vcpu
        self._idle_rip = idle_rip
        self._on_mmio = on_mmio
        self._uart = uart
        self._on_hypercall = on_hypercall
        self._on_end = on_end
        self.name = f"vCPU {vcpu.id}"
        self._thread = threading.Thread(target=self._main, name=f"kvm-vcpu{vcpu.id}", daemon=True)
        self._stop = False
        self._pause = threading.Event()
        self._paused = threading.Event()
        self._resume = threading.Event()
        self.end: VcpuEnd | None = None
        self.exits = 0
        self.mmio_exits = 0
        #: idle HLT exits, each a wait for input
        self.idle_halts = 0

    def start(self, paused: bool = False) -> None:
        """Start the thread; ``paused``: held before the first KVM_RUN until ``resume()``."""
        if paused:
            self._resume.clear()
            self._pause.set()
        self._thread.start()

    @property
    def vcpu_fd(self) -> int:
        return self._vcpu.fd

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    @property
    def held(self) -> bool:
        """The thread waits outside KVM_RUN for ``resume()`` (paused)."""
        return self._paused.is_set() and self._thread.is_alive()

    def kernel_state(self) -> str:
        """What the kernel says of this vCPU's thread: its scheduler state, where it sleeps
        and its kernel stack (readable by root only; empty while the task runs). For the log
        of a step that hung: a guest spinning in KVM_RUN is "R", one whose idle ``hlt``
        waits for input "S" in a futex, and the thread's CPU time says whether a running
        vCPU spends it in the guest, in the kernel (KVM's fault paths) or in Python."""
        tid = self._thread.native_id
        if tid is None or not self._thread.is_alive():
            return f"{self.name}: its thread has ended"
        task = Path(f"/proc/self/task/{tid}")
        try:
            stat = (task / "stat").read_text().rsplit(")", 1)[1].split()
            wchan = (task / "wchan").read_text().strip()
        except OSError as exc:  # the thread ended meanwhile
            return f"{self.name} thread {tid}: {exc.strerror}"
        # fields 3, 14, 15 and 43 of proc_pid_stat(5): state, utime, stime, guest_time
        state, tick = stat[0], os.sysconf("SC_CLK_TCK")
        user, system, guest = (int(stat[i]) / tick for i in (11, 12, 40))
        try:
            frames = [f.split("] ", 1)[-1] for f in (task / "stack").read_text().splitlines()]
            stack = " < ".join(frames) or "(none: the task is running)"
        except OSError as exc:
            stack = f"({exc.strerror})"
        return (
            f"{self.name} thread {tid}: state {state}, wchan {wchan if wchan != '0' else '-'}, "
            f"{self.exits} exits, CPU user {user:.2f} s system {system:.2f} s guest "
            f"{guest:.2f} s; kernel stack: {stack}"
        )

    # -- control from other threads --------------------------------------------------------
    def _kick(self) -> None:
        self._vcpu.kvm_run.immediate_exit = 1
        self._uart.kick()
        ident = self._thread.ident
        if _kick_installed and ident is not None and self._thread.is_alive():
            with contextlib.suppress(OSError):  # the thread ended meanwhile
                signal.pthread_kill(ident, KICK_SIGNAL)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the thread; True when it ended within ``timeout``."""
        self._stop = True
        self._resume.set()
        deadline = timeout
        while self._thread.is_alive() and deadline > 0:
            self._kick()
            self._thread.join(0.05)
            deadline -= 0.05
        return not self._thread.is_alive()

    def pause(self, timeout: float = 5.0) -> bool:
        """Hold the vCPU outside KVM_RUN; True once it is held."""
        self._resume.clear()
        self._pause.set()
        waited = 0.0
        while not self._paused.is_set() and self._thread.is_alive() and waited < timeout:
            self._kick()
            self._paused.wait(0.02)
            waited += 0.02
        return self._paused.is_set()

    def resume(self) -> None:
        self._pause.clear()
        self._paused.clear()
        self._resume.set()

    # -- the vCPU thread ---------------------------------------------------------------------
    def _main(self) -> None:
        try:
            end = self._loop()
        except BaseException as exc:  # a bug or a failed ioctl: report it, never hang
            log.exception("vCPU thread failed")
            end = VcpuEnd(EndReason.FAILED, f"{type(exc).__name__}: {exc}")
        self._uart.flush()
        self.end = end
        self._on_end(end)

    def _hold_if_paused(self) -> bool:
        """Called with the vCPU outside KVM_RUN; False when the thread must end."""
        if self._pause.is_set():
            self._uart.flush()
            self._paused.set()
            while not self._resume.wait(0.1):
                if self._stop:
                    return False
        return not self._stop

    def _loop(self) -> VcpuEnd:
        vcpu, uart, run = self._vcpu, self._uart, self._vcpu.kvm_run
        fd, request = vcpu.fd, abi.KVM_RUN
        raw_ioctl = ksys._ioctl
        # the whole vCPU mapping: KVM_EXIT_IO data lies past struct kvm_run (data_offset)
        data_page = (ctypes.c_uint8 * vcpu.run_size).from_address(vcpu.run_addr)
        io = run.io
        uart_in, uart_out = uart.io_in, uart.io_out
        exit_io, exit_hlt, exit_intr = abi.Exit.IO, abi.Exit.HLT, abi.Exit.INTR
        com_lo, com_hi = COM1, COM1 + 8
        exits = 0
        # A kick aimed at an earlier runner of this vCPU may have left immediate_exit set.
        run.immediate_exit = 0
        try:
            while True:
                if self._stop or self._pause.is_set():
                    run.immediate_exit = 0
                    if not self._hold_if_paused():
                        return VcpuEnd(EndReason.STOPPED)
                    run.immediate_exit = 0
                if raw_ioctl(fd, request, None) < 0:
                    err = ctypes.get_errno()
                    if err in (errno.EINTR, errno.EAGAIN):  # a kick
                        if not (self._stop or self._pause.is_set()):
                            run.immediate_exit = 0  # a stale kick: run on
                        continue
                    if run.exit_reason == abi.Exit.MEMORY_FAULT:  # comes with EFAULT/EHWPOISON
                        return VcpuEnd(EndReason.FAILED, self._describe(abi.Exit.MEMORY_FAULT))
                    name = errno.errorcode.get(err, str(err))
                    return VcpuEnd(EndReason.FAILED, self._where(f"KVM_RUN failed with {name}"))
                exits += 1
                self.exits = exits  # readable while the thread runs
                reason = run.exit_reason
                if reason == exit_io:
                    port = io.port
                    off = io.data_offset
                    if com_lo <= port < com_hi:
                        reg = port - com_lo
                        if io.direction:  # KVM_EXIT_IO_OUT
                            count = io.count
                            if count == 1:
                                uart_out(reg, data_page[off])
                            elif reg == 0:
                                uart.write_bytes(bytes(data_page[off : off + count]))
                            else:
                                for i in range(count):
                                    uart_out(reg, data_page[off + i * io.size])
                        else:
                            for i in range(io.count):
                                data_page[off + i * io.size] = uart_in(reg)
                    elif port == DEBUG_EXIT_PORT and io.direction:
                        value = int.from_bytes(bytes(data_page[off : off + io.size]), "little")
                        return VcpuEnd(EndReason.DEBUG_EXIT, f"value {value:#x}", value)
                    elif not io.direction:  # an absent device reads as all ones
                        n = io.size * io.count
                        for i in range(n):
                            data_page[off + i] = 0xFF
                elif reason == exit_intr:
                    continue
                elif reason == exit_hlt:
                    if self._idle_rip is None or vcpu.get_regs().rip != self._idle_rip:
                        return VcpuEnd(EndReason.HALTED, "the guest executed HLT")
                    self.idle_halts += 1
                    uart.flush()
                    uart.wait_input(IDLE_WAIT)  # input, or a kick (stop, pause)
                elif reason == abi.Exit.HYPERCALL:
                    self._on_hypercall(run.hypercall)
                elif reason == abi.Exit.MMIO:
                    mmio = run.mmio
                    if self._on_mmio is not None and self._on_mmio(vcpu.id, mmio):
                        continue
                    self.mmio_exits += 1
                    if not mmio.is_write:
                        for i in range(8):
                            mmio.data[i] = 0xFF
                    if self.mmio_exits <= 8:
                        log.info(
                            "guest %s unbacked GPA %#x (%d bytes)",
                            "wrote" if mmio.is_write else "read",
                            mmio.phys_addr,
                            mmio.len,
                        )
                elif reason == abi.Exit.SHUTDOWN:
                    return VcpuEnd(EndReason.SHUTDOWN, self._where("triple fault"))
                else:
                    return VcpuEnd(EndReason.FAILED, self._describe(reason))
        finally:
            self.exits = exits

    def _where(self, what: str) -> str:
        try:
            regs = self._vcpu.get_regs()
            return f"{what} at rip {regs.rip:#x}"
        except OSError:
            return what

    def _describe(self, reason: int) -> str:
        run = self._vcpu.kvm_run
        try:
            name = abi.Exit(reason).name
        except ValueError:
            name = str(reason)
        if reason == abi.Exit.INTERNAL_ERROR:
            data = ", ".join(
                f"{run.internal.data[i]:#x}" for i in range(min(run.internal.ndata, 16))
            )
            return self._where(f"KVM_EXIT_INTERNAL_ERROR suberror {run.internal.suberror} [{data}]")
        if reason == abi.Exit.MEMORY_FAULT:
            mf = run.memory_fault
            return self._where(
                f"KVM_EXIT_MEMORY_FAULT gpa {mf.gpa:#x} size {mf.size:#x} flags {mf.flags:#x}"
            )
        if reason == abi.Exit.FAIL_ENTRY:
            return f"KVM_EXIT_FAIL_ENTRY reason {run.fail_entry.hardware_entry_failure_reason:#x}"
        return self._where(f"unhandled exit KVM_EXIT_{name}")
