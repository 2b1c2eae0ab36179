"""The guest channel over the emulated COM1: asyncio streams in front of :class:`Uart16550`.

Why apart from the engine: the QEMU engine hands :class:`~qmpgmem.guest.channel.GuestChannel`
a socket; here there is none, so the write side is a transport that feeds the UART's input
queue and the read side a stream reader the vCPU thread feeds (through the event loop) with
what the guest transmits. A reset replaces the pair: the guest resets its UART, and lines
of the old boot must not reach the new one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from qmpgmem.engines.kvm.serial import Uart16550
from qmpgmem.guest.channel import GuestChannel

__all__ = ["open_uart_channel"]

#: The reader's buffer: a guest line is at most a few hundred bytes; stray output may be more.
_READ_LIMIT = 1 << 20


class _GuestInput(asyncio.WriteTransport):
    """The write side of the guest channel: bytes go straight into the UART's input queue."""

    def __init__(self, uart: Uart16550) -> None:
        super().__init__()
        self._uart = uart
        self._closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closing:
            self._uart.feed(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def abort(self) -> None:
        self._closing = True

    def get_write_buffer_size(self) -> int:
        return 0

    def can_write_eof(self) -> bool:
        return False


def open_uart_channel(
    uart: Uart16550,
    loop: asyncio.AbstractEventLoop,
    log_path: Path,
    on_eof: Callable[[], Exception],
) -> tuple[GuestChannel, asyncio.StreamReader]:
    """A channel whose requests go into ``uart`` and the reader that the guest's output must
    be fed to (``reader.feed_data`` / ``feed_eof``, from the event loop's thread)."""
    reader = asyncio.StreamReader(limit=_READ_LIMIT)
    protocol = asyncio.StreamReaderProtocol(reader)
    writer = asyncio.StreamWriter(_GuestInput(uart), protocol, reader, loop)
    return GuestChannel(reader, writer, log_path, on_eof=on_eof), reader
