"""Client side of the guest channel: line requests over a stream, replies checked.

Why engine-independent: the QEMU engine reaches the guest's UART through a socket, the KVM
engine through its own UART emulation; both hand this class a pair of asyncio streams. Every
line in either direction is appended to a log (the serial log kept with a failed run).

Two channels, one protocol: when the guest's HELLO offers a mailbox page (``mbox=``) and the
engine mapped it (:meth:`GuestChannel.attach_mailbox`), requests go through the page
(guest/mailbox.py) and the stream only carries the doorbells — a NUL to wake a sleeping guest,
a ``\n`` from the guest when the reply is there — plus anything the guest prints (a FAULT
line, a new HELLO). Otherwise every request is a line on the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from qmpgmem.errors import GuestProtocolError
from qmpgmem.guest import protocol
from qmpgmem.guest.mailbox import MBOX_GPA, Mailbox
from qmpgmem.guest.protocol import Hello

#: Without a doorbell for this long, look at the mailbox again and wake the guest again.
MAILBOX_RECHECK = 0.05
#: How long to watch the mailbox for the reply of an awake guest before waiting for its
#: doorbell (the guest rings none while the host watches). An awake guest answers within
#: microseconds, so a short watch saves the doorbell's exit and the wake-up of this thread
#: without holding a core for long. Measured on this 2-core kvm_pvm host (2026-12-03, idle,
#: then beside two CPU hogs; docs/performance.md): PING on the kvm engine 115 -> 10 us idle
#: and 103 -> 14 us beside the hogs; QEMU/KVM 43 -> 17 us idle and 144 -> 15 us beside them.
#: A 20 us watch gave QEMU/KVM a 3.7 ms 90th percentile beside the hogs; a 0.5 ms one gave
#: ~2 ms at load 9-12 earlier. Under TCG the doorbell costs next to nothing and a watch buys
#: nothing, so the QEMU engine watches under KVM only.
MAILBOX_WATCH = 50e-6


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
        self._mailbox: Mailbox | None = None
        self._watch = MAILBOX_WATCH
        self._host_flags = 0
        #: the last HELLO came through the mailbox page (not as a line on the stream)
        self.hello_via_mailbox = False
        #: requests answered through the mailbox (the rest went over the stream)
        self.mailbox_requests = 0

    def attach_mailbox(
        self, mailbox: Mailbox | None, watch: float = MAILBOX_WATCH, host_flags: int = 0
    ) -> None:
        """The guest's mailbox page as the engine mapped it; used once the guest offers it.

        Call it before the guest boots: it offers the page for the guest's HELLO (one exit,
        not one per byte on COM1), with ``host_flags`` (guest/mailbox.py: what the engine's
        devices do not need). ``watch``: how long to watch for the reply before waiting
        for the doorbell (0: never; the watch yields the CPU and the GIL each round).
        """
        self._mailbox = mailbox
        self._watch = watch
        self._host_flags = host_flags
        if mailbox is not None:
            mailbox.offer_hello(host_flags)

    @contextlib.contextmanager
    def over_serial(self) -> Iterator[None]:
        """Requests inside go over the serial line though a mailbox is attached (baselines)."""
        saved, self._mailbox = self._mailbox, None
        try:
            yield
        finally:
            self._mailbox = saved

    @property
    def via_mailbox(self) -> bool:
        """Requests go through the mailbox: the guest offered it in this boot's HELLO."""
        mb, hello = self._mailbox, self.hello
        return mb is not None and hello is not None and hello.mbox == MBOX_GPA and mb.ready

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
        """Skip anything before the guest's HELLO (firmware output) and return it: a line on
        the stream, or — after a doorbell, when the mailbox was offered — from the page."""
        while True:
            line = await self._readline()
            from_page = False
            if not line.strip("\0") and self._mailbox is not None:  # a doorbell
                text = self._mailbox.hello()
                if text is None:
                    continue
                self._record("<", text)
                line, from_page = text, True
            hello = protocol.parse_hello(line)
            if hello is not None:
                if hello.version != protocol.PROTOCOL_VERSION:
                    raise GuestProtocolError(
                        f"guest speaks protocol {hello.version}, "
                        f"this qmpgmem speaks {protocol.PROTOCOL_VERSION}"
                    )
                self.hello = hello
                self.hello_via_mailbox = from_page
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
            mailbox = self._mailbox if self.via_mailbox else None
            if mailbox is not None:
                self.mailbox_requests += 1
                mailbox.watch(self._watch > 0)
                if mailbox.post(line):  # the guest sleeps: its wake-up byte, no watching
                    mailbox.watch(False)
                    self._writer.write(b"\0")
                elif self._watch > 0:
                    _watch(mailbox, self._watch)
            else:
                self._writer.write(line.encode("ascii") + b"\n")
            await self._writer.drain()
            while True:
                if mailbox is not None:
                    reply = await self._mailbox_reply(mailbox, line)
                else:
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
                if mailbox is not None:
                    raise GuestProtocolError(f"the guest answered {line!r} with {reply!r}")
                # anything else is stray output; it is in the log

    async def _mailbox_reply(self, mailbox: Mailbox, line: str) -> str:
        """Wait for the guest's doorbell (or look again after MAILBOX_RECHECK); the reply."""
        while (reply := mailbox.reply()) is None:
            try:
                async with asyncio.timeout(MAILBOX_RECHECK):
                    raw = await self._reader.readline()
            except TimeoutError:  # a lost doorbell either way costs this much, no more
                self._writer.write(b"\0")
                continue
            if not raw:
                if self._on_eof is not None:
                    raise self._on_eof()
                raise GuestProtocolError("the guest channel closed (the VM is gone)")
            text = raw.decode("ascii", errors="replace").strip("\r\n\0")
            if text:  # not a doorbell: something the guest printed
                self._record("<", text)
                if text.startswith("HELLO "):
                    raise GuestProtocolError(
                        f"the guest rebooted while handling {line.split()[0]}: {text!r}"
                    )
        self._record("<", reply)
        return reply

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
        """Before a reset: the next HELLO is the new boot's (offered the page again)."""
        self.hello = None
        if self._mailbox is not None:
            self._mailbox.offer_hello(self._host_flags)

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


def _watch(mailbox: Mailbox, seconds: float) -> None:
    """Watch for the reply of an awake guest for up to ``seconds``, then stop watching.

    Blocks the event loop that long at most. Each round yields the CPU and the GIL
    (``os.sched_yield``, ~2 us; ``time.sleep(0)`` sleeps ~0.1 ms here): the vCPU may need
    this core, and a vCPU thread of the kvm engine the GIL for the guest's exits.
    """
    deadline = time.perf_counter() + seconds
    while mailbox.reply() is None and time.perf_counter() < deadline:
        os.sched_yield()
    mailbox.watch(False)
