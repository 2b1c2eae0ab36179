"""Client side of the guest channel: line requests over a stream, replies checked.

Why engine-independent: the QEMU engine reaches the guest's UART through a socket, the KVM
engine through its own UART emulation; both hand this class a pair of asyncio streams. Every
line in either direction is appended to a log (the serial log kept with a failed run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from qmpgmem.errors import GuestProtocolError
from qmpgmem.guest import protocol
from qmpgmem.guest.protocol import Hello


class GuestChannel:
    """Request/reply over the micro guest's text protocol (see guest/protocol.py)."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        log_path: Path | None = None,
        on_eof: Callable[[], Exception] | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._log: TextIO | None = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
        self._t0 = time.monotonic()
        self._on_eof = on_eof
        self._lock = asyncio.Lock()
        self.hello: Hello | None = None

    def _record(self, direction: str, line: str) -> None:
        if self._log is not None:
            self._log.write(f"{time.monotonic() - self._t0:10.6f} {direction} {line}\n")

    async def _readline(self) -> str:
        raw = await self._reader.readline()
        if not raw:
            if self._on_eof is not None:
                raise self._on_eof()
            raise GuestProtocolError("the guest channel closed (the VM is gone)")
        line = raw.decode("ascii", errors="replace").rstrip("\r\n")
        self._record("<", line)
        return line

    async def wait_hello(self) -> Hello:
        """Skip anything before the guest's HELLO (firmware output) and return it."""
        while True:
            line = await self._readline()
            hello = protocol.parse_hello(line)
            if hello is not None:
                if hello.version != protocol.PROTOCOL_VERSION:
                    raise GuestProtocolError(
                        f"guest speaks protocol {hello.version}, "
                        f"this qmpgmem speaks {protocol.PROTOCOL_VERSION}"
                    )
                self.hello = hello
                return hello

    async def request(self, line: str) -> str:
        """Send one request and return the reply's text after ``OK``."""
        async with self._lock:
            self._record(">", line)
            self._writer.write(line.encode("ascii") + b"\n")
            await self._writer.drain()
            while True:
                reply = await self._readline()
                if reply.startswith("HELLO "):
                    raise GuestProtocolError(
                        f"the guest rebooted while handling {line.split()[0]}: {reply!r}"
                    )
                if reply == "OK" or reply.startswith("OK "):
                    return reply[3:]
                if reply.startswith("ERR"):
                    raise GuestProtocolError(f"guest refused {line!r}: {reply[4:]}")
                # anything else is stray output; it is in the log

    async def ping(self) -> None:
        reply = await self.request("PING")
        if reply != "PONG":
            raise GuestProtocolError(f"PING answered {reply!r}")

    async def write(self, gpa: int, size: int, seed: int, offset: int) -> None:
        reply = await self.request(protocol.request_write(gpa, size, seed, offset))
        if reply:
            raise GuestProtocolError(f"WRITE answered {reply!r}")

    async def hash(self, gpa: int, size: int) -> int:
        reply = await self.request(protocol.request_hash(gpa, size))
        try:
            return int(reply, 16)
        except ValueError:
            raise GuestProtocolError(f"HASH answered {reply!r}") from None

    async def convert(self, gpa: int, size: int, private: bool) -> int:
        reply = await self.request(protocol.request_convert(gpa, size, private))
        parts = reply.split()
        if len(parts) != 2 or parts[0] != "RET":
            raise GuestProtocolError(f"CONVERT answered {reply!r}")
        return int(parts[1])

    async def exit(self, code: int) -> None:
        self._record(">", protocol.request_exit(code))
        self._writer.write(protocol.request_exit(code).encode() + b"\n")
        await self._writer.drain()

    def reset_hello(self) -> None:
        self.hello = None

    def close(self) -> None:
        self._writer.close()
        if self._log is not None:
            self._log.close()
            self._log = None
