"""The COM1 model alone: registers, line batching, the idle wait and its wake-ups."""

from __future__ import annotations

import threading
import time

from qmpgmem.engines.kvm import serial
from qmpgmem.engines.kvm.serial import Uart16550


def make() -> tuple[Uart16550, list[bytes]]:
    out: list[bytes] = []
    return Uart16550(out.append, idle_wait=5.0), out


def test_output_is_batched_per_line() -> None:
    uart, out = make()
    for b in b"OK PONG\nmore":
        uart.io_out(serial.RBR_THR, b)
    assert out == [b"OK PONG\n"]
    uart.flush()
    assert out == [b"OK PONG\n", b"more"]


def test_rep_outsb_and_long_output() -> None:
    uart, out = make()
    uart.write_bytes(b"x" * 5000)
    assert out == [b"x" * 5000]


def test_divisor_latch_does_not_transmit() -> None:
    uart, out = make()
    uart.io_out(serial.LCR, serial.LCR_DLAB | 3)
    uart.io_out(serial.RBR_THR, 0x01)
    uart.io_out(serial.IER, 0x00)
    assert uart.io_in(serial.RBR_THR) == 0x01
    uart.io_out(serial.LCR, 3)
    uart.flush()
    assert out == []
    assert uart.io_in(serial.LCR) == 3


def test_input_sets_data_ready_and_reads_in_order() -> None:
    uart, _ = make()
    assert not uart.io_in(serial.LSR) & serial.LSR_DR
    uart.feed(b"AB")
    lsr = uart.io_in(serial.LSR)
    assert lsr & serial.LSR_DR and lsr & serial.LSR_THRE
    assert uart.io_in(serial.RBR_THR) == ord("A")
    assert uart.io_in(serial.RBR_THR) == ord("B")
    assert not uart.io_in(serial.LSR) & serial.LSR_DR
    assert uart.io_in(serial.IIR_FCR) == serial.IIR_NO_INT
    assert uart.io_in(serial.MSR) == serial.MSR_IDLE


def test_idle_polls_wait_until_input_arrives() -> None:
    uart, _ = make()
    for _ in range(serial.POLLS_BEFORE_WAIT):
        assert not uart.io_in(serial.LSR) & serial.LSR_DR
    threading.Timer(0.05, uart.feed, (b"P",)).start()
    t0 = time.monotonic()
    lsr = uart.io_in(serial.LSR)  # this poll blocks until the timer feeds input
    waited = time.monotonic() - t0
    assert lsr & serial.LSR_DR
    assert 0.03 < waited < 2.0


def test_kick_ends_the_idle_wait() -> None:
    uart, _ = make()
    for _ in range(serial.POLLS_BEFORE_WAIT):
        uart.io_in(serial.LSR)
    threading.Timer(0.05, uart.kick).start()
    t0 = time.monotonic()
    assert not uart.io_in(serial.LSR) & serial.LSR_DR
    assert time.monotonic() - t0 < 2.0


def test_reset_drops_pending_bytes() -> None:
    uart, out = make()
    uart.feed(b"xyz")
    uart.io_out(serial.RBR_THR, ord("q"))
    uart.reset()
    uart.flush()
    assert out == []
    assert not uart.io_in(serial.LSR) & serial.LSR_DR
