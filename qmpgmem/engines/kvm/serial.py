"""COM1 as the micro guest sees it: just enough of a 16550 for polled, line-based I/O.

Why so little: the guest only polls LSR and moves bytes through THR/RBR; anything else it
touches (IER, LCR, divisor latch, FCR, MCR, SCR) is stored or ignored, and no interrupt is
ever raised. The vCPU thread calls :meth:`Uart16550.io_in` / :meth:`Uart16550.io_out` from its
port-I/O exits; the event loop feeds guest input with :meth:`Uart16550.feed`.

Why the blocking wait in :meth:`Uart16550.io_in`: a guest that polls LSR (the rest of a line
on its way, or an older guest that never sleeps) makes one VM exit per poll. Answering every
poll at once would burn a host core and the GIL, so after a couple of consecutive empty polls
the vCPU thread sleeps on a condition until input arrives, ``kick()`` is called, or
``idle_wait`` passes. The micro guest itself sleeps between requests (an idle ``hlt``, see
vcpu_thread.py); :meth:`Uart16550.wait_input` is where its vCPU thread then waits. A guest
that enabled the receive interrupt (IER.ERBFI) is such a guest: its empty polls are answered
at once, since it checks LSR only right after it woke or while a line is arriving.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import Final

COM1: Final = 0x3F8
RBR_THR: Final = 0  # receive buffer (in) / transmit holding (out); divisor LSB with DLAB
IER: Final = 1
IIR_FCR: Final = 2
LCR: Final = 3
MCR: Final = 4
LSR: Final = 5
MSR: Final = 6
SCR: Final = 7

IER_ERBFI: Final = 0x01  # received-data interrupt enabled: the guest sleeps, never spins on LSR
LSR_DR: Final = 0x01  # data ready
LSR_THRE: Final = 0x20  # transmit holding register empty
LSR_TEMT: Final = 0x40  # transmitter empty
LCR_DLAB: Final = 0x80
IIR_NO_INT: Final = 0x01
MSR_IDLE: Final = 0xB0  # DCD | DSR | CTS: a peer is connected and ready

#: Empty LSR polls in a row after which the vCPU thread waits for input instead of answering.
POLLS_BEFORE_WAIT: Final = 2


class Uart16550:
    """The UART state; ``on_output`` gets the guest's bytes a line (or 4 KiB) at a time."""

    def __init__(self, on_output: Callable[[bytes], None], idle_wait: float = 0.05) -> None:
        self._on_output = on_output
        self._idle_wait = idle_wait
        self._tx = bytearray()
        self._rx: deque[int] = deque()
        self._cond = threading.Condition()
        self._kicked = False
        self._empty_polls = 0
        self.lcr = 0x03
        self.ier = 0
        self.mcr = 0
        self.scr = 0
        self.dll = 0x01
        self.dlm = 0

    # -- event loop side ------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        """Queue input for the guest (thread-safe)."""
        with self._cond:
            self._rx.extend(data)
            self._cond.notify_all()

    def kick(self) -> None:
        """Wake a vCPU thread waiting for input (thread-safe)."""
        with self._cond:
            self._kicked = True
            self._cond.notify_all()

    def wait_input(self, timeout: float) -> bool:
        """Block until there is input or ``kick()`` was called (or ``timeout``); True: input."""
        with self._cond:
            if not self._rx and not self._kicked:
                self._cond.wait(timeout)
            self._kicked = False
            return bool(self._rx)

    def reset(self) -> None:
        """Drop pending input and output, as a reset of the machine would."""
        with self._cond:
            self._rx.clear()
        self._tx.clear()
        self._empty_polls = 0

    # -- vCPU thread side -----------------------------------------------------------------
    def io_out(self, reg: int, value: int) -> None:
        if reg == RBR_THR:
            if self.lcr & LCR_DLAB:
                self.dll = value
                return
            self._empty_polls = 0
            self._tx.append(value)
            if value == 0x0A or len(self._tx) >= 4096:
                self.flush()
        elif reg == IER:
            if self.lcr & LCR_DLAB:
                self.dlm = value
            else:
                self.ier = value & 0x0F
        elif reg == LCR:
            self.lcr = value
        elif reg == MCR:
            self.mcr = value & 0x1F
        elif reg == SCR:
            self.scr = value
        # FCR, LSR, MSR writes: nothing to emulate

    def write_bytes(self, data: bytes) -> None:
        """Several THR writes at once (``rep outsb``)."""
        if self.lcr & LCR_DLAB:
            self.dll = data[-1]
            return
        self._empty_polls = 0
        self._tx += data
        if 0x0A in data or len(self._tx) >= 4096:
            self.flush()

    def io_in(self, reg: int) -> int:
        if reg == LSR:
            return self._lsr()
        if reg == RBR_THR:
            if self.lcr & LCR_DLAB:
                return self.dll
            self._empty_polls = 0
            with self._cond:
                return self._rx.popleft() if self._rx else 0
        if reg == IER:
            return self.dlm if self.lcr & LCR_DLAB else self.ier
        if reg == IIR_FCR:
            return IIR_NO_INT
        if reg == LCR:
            return self.lcr
        if reg == MCR:
            return self.mcr
        if reg == MSR:
            return MSR_IDLE
        return self.scr

    def _lsr(self) -> int:
        if self._rx:  # deque truthiness needs no lock; a stale answer only delays a poll
            self._empty_polls = 0
            return LSR_THRE | LSR_TEMT | LSR_DR
        self._empty_polls += 1
        if self._empty_polls > POLLS_BEFORE_WAIT and not self.ier & IER_ERBFI:
            self.flush()
            with self._cond:
                if not self._rx and not self._kicked:
                    self._cond.wait(self._idle_wait)
                self._kicked = False
                if self._rx:
                    self._empty_polls = 0
                    return LSR_THRE | LSR_TEMT | LSR_DR
        return LSR_THRE | LSR_TEMT

    def flush(self) -> None:
        if self._tx:
            data = bytes(self._tx)
            self._tx.clear()
            self._on_output(data)
