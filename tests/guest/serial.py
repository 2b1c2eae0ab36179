"""A test-only line client for the micro guest's channel (the engines have their own).

Why a separate one: these tests check the guest itself, byte for byte, so they must not
depend on the engine code that is built on top of the guest.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from qmpgmem.guest import protocol
from qmpgmem.guest.protocol import Hello


class GuestSerial:
    """Text lines to and from the guest's COM1 over a connected stream socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.lines: list[str] = []  # everything received, for failure messages

    @classmethod
    async def over(cls, sock: socket.socket) -> GuestSerial:
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        return cls(reader, writer)

    async def readline(self, timeout: float = 10.0) -> str:
        async with asyncio.timeout(timeout):
            raw = await self._reader.readline()
        if not raw:
            raise EOFError(f"the guest channel closed; received so far: {self.lines}")
        line = raw.decode("ascii", errors="replace").rstrip("\r\n")
        self.lines.append(line)
        return line

    async def hello(self, timeout: float = 10.0) -> Hello:
        """Skip firmware output up to the guest's HELLO line."""
        async with asyncio.timeout(timeout):
            while True:
                hello = protocol.parse_hello(await self.readline(timeout))
                if hello is not None:
                    return hello

    def send(self, line: str | bytes) -> None:
        self._writer.write(line if isinstance(line, bytes) else line.encode("ascii") + b"\n")

    async def request(self, line: str | bytes, timeout: float = 30.0) -> str:
        """One request, one reply line (whatever it is: OK, ERR, FAULT)."""
        self.send(line)
        await self._writer.drain()
        return await self.readline(timeout)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
