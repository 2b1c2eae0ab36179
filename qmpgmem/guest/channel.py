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
        #: APIC ID of the vCPU that ran the last job sent to a named vCPU
        self.last_apic: int | None = None
        #: APIC ID per vCPU index, once start_vcpus() brought them up
        self.apic_ids: list[int] = [0]

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
        return (await self.request_apic(line))[1]

    async def request_apic(self, line: str) -> tuple[int | None, str]:
        """Send one request; (APIC ID of the vCPU that ran it, or None, text after ``OK``).

        A job run on a named vCPU (``@<k> ...``, ``RESULT <k>``) is answered
        ``@<apic> OK ...``; other replies carry no APIC ID.
        """
        async with self._lock:
            self._record(">", line)
            self._writer.write(line.encode("ascii") + b"\n")
            await self._writer.drain()
            while True:
                reply = await self._readline()
                apic, reply = protocol.split_apic(reply)
                if reply.startswith("HELLO "):
                    raise GuestProtocolError(
                        f"the guest rebooted while handling {line.split()[0]}: {reply!r}"
                    )
                if reply == "OK" or reply.startswith("OK "):
                    return apic, reply[3:]
                if reply.startswith("ERR"):
                    raise GuestProtocolError(f"guest refused {line!r}: {reply[4:]}")
                # anything else is stray output; it is in the log

    async def ping(self) -> None:
        reply = await self.request("PING")
        if reply != "PONG":
            raise GuestProtocolError(f"PING answered {reply!r}")

    async def _on(self, vcpu: int | None, line: str) -> str:
        """``line`` on vCPU ``vcpu`` (None: the BSP, the one-vCPU form); the APIC ID of the
        vCPU that ran it is kept in ``last_apic``."""
        if vcpu is None:
            self.last_apic = None
            return await self.request(line)
        self.last_apic, text = await self.request_apic(protocol.request_on(vcpu, line))
        return text

    async def write(
        self, gpa: int, size: int, seed: int, offset: int, vcpu: int | None = None
    ) -> None:
        reply = await self._on(vcpu, protocol.request_write(gpa, size, seed, offset))
        _parse_write(reply)

    async def hash(self, gpa: int, size: int, vcpu: int | None = None) -> int:
        return _parse_hash(await self._on(vcpu, protocol.request_hash(gpa, size)))

    async def convert(self, gpa: int, size: int, private: bool, vcpu: int | None = None) -> int:
        reply = await self._on(vcpu, protocol.request_convert(gpa, size, private))
        return _parse_convert(reply)

    async def start_vcpus(self, count: int) -> list[int]:
        """Bring up vCPUs 1..count-1 (SMP); the APIC ID of each vCPU, by index."""
        reply = await self.request(f"SMP {count:x}")
        parts = reply.split()
        try:
            if parts[0] != "SMP" or len(parts) != count + 1:
                raise ValueError(reply)
            apics = [int(p, 16) for p in parts[1:]]
        except (ValueError, IndexError):
            raise GuestProtocolError(f"SMP answered {reply!r}") from None
        self.apic_ids = apics
        return apics

    async def parallel(self, jobs: list[tuple[int, str]]) -> list[tuple[int | None, str]]:
        """Run ``(vcpu, request line)`` jobs at the same time (ARM each, one GO); their
        (APIC ID, reply text) in the order given. A refused job raises after all are read."""
        errors: list[GuestProtocolError] = []
        armed = []
        for vcpu, line in jobs:
            try:
                await self.request(protocol.request_arm(vcpu, line))
                armed.append(vcpu)
            except GuestProtocolError as exc:  # still GO and read the others: no job left
                errors.append(exc)
        await self.request("GO")
        results: list[tuple[int | None, str]] = []
        for vcpu in armed:
            try:
                results.append(await self.request_apic(f"RESULT {vcpu:x}"))
            except GuestProtocolError as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
        return results

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


def _parse_write(reply: str) -> None:
    """A WRITE's reply text after ``OK`` is empty."""
    if reply:
        raise GuestProtocolError(f"WRITE answered {reply!r}")


def _parse_hash(reply: str) -> int:
    """A HASH's reply text after ``OK``: the hash."""
    try:
        return int(reply, 16)
    except ValueError:
        raise GuestProtocolError(f"HASH answered {reply!r}") from None


def _parse_convert(reply: str) -> int:
    """A CONVERT's reply text after ``OK``: ``RET <rax>``."""
    parts = reply.split()
    if len(parts) != 2 or parts[0] != "RET":
        raise GuestProtocolError(f"CONVERT answered {reply!r}")
    return int(parts[1])
