"""The host's side of the guest's mailbox page: one request and one reply in shared memory.

Why: over COM1 every byte of a request is a VM exit and each reply waits for the guest's
polls; through the page a request costs the guest no exit at all when it is awake (it watches
the page for a while after each reply) and one when it sleeps (draining the host's wake-up
byte), and a reply costs one (the doorbell: a ``\\n`` on COM1). The text of requests and
replies is the serial protocol's, so both channels share the guest's parser and the host's
reply handling (guest/channel.py).

The page is at ``MBOX_GPA`` inside the guest's own area; the engines give it a backend of its
own that this process maps (QEMU: a memfd passed as a 4 KiB NUMA node; the kvm engine: its
own mapping of the sys area). docs/guest-protocol.md, *Mailbox*, is the layout.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Final

MBOX_GPA: Final = 0x3FF000
MBOX_SIZE: Final = 4096
MAGIC: Final = 0x31584F4D  # "MOX1", written by the guest once the page is ready
REQ_SEQ, REP_SEQ, REQ_LEN, REP_LEN, SLEEPING, MAGIC_AT = 0x00, 0x04, 0x08, 0x0C, 0x10, 0x14
HOST_POLLING, HELLO_OFFER_AT, HOST_FLAGS, HELLO_LEN = 0x18, 0x1C, 0x20, 0x24
REQ, REP, HELLO, TEXT_MAX = 0x100, 0x200, 0x300, 256
#: Written by the host before a boot: the guest then puts its HELLO in the page ("HELO").
HELLO_OFFER: Final = 0x4F4C4548
#: Host flags read with the offer: no IOAPIC (the wake-up needs no routing); a COM1 that
#: needs no programming but IER. The kvm engine's devices; QEMU's need both done.
HOST_NO_IOAPIC: Final = 0x1
HOST_UART_READY: Final = 0x2
#: Any locked instruction is a full fence on x86; acquiring a lock executes one.
_FENCE = threading.Lock()


class Mailbox:
    """The page, through a writable buffer of ``MBOX_SIZE`` bytes (the engine keeps it mapped)."""

    def __init__(self, page: memoryview) -> None:
        if len(page) < MBOX_SIZE or page.readonly:
            raise ValueError("the mailbox needs a writable 4 KiB buffer")
        self._page = page
        # ctypes views: each access is one aligned 32-bit load or store, never torn
        words = (ctypes.c_uint32 * 10).from_buffer(page)
        self._words = words
        self.seq = 0

    def _word(self, offset: int) -> int:
        return int(self._words[offset // 4])

    @property
    def ready(self) -> bool:
        """The guest initialised the page in this boot (it does so before its HELLO)."""
        return self._word(MAGIC_AT) == MAGIC

    def offer_hello(self, host_flags: int = 0) -> None:
        """Before the guest boots (or reboots): ask for its HELLO in the page, with one
        doorbell, instead of a line on COM1 (an exit per byte). A guest that does not take
        the offer says HELLO on COM1 as before. Clears the previous boot's HELLO."""
        self._words[HELLO_LEN // 4] = 0
        self._words[HOST_FLAGS // 4] = host_flags
        self._words[HELLO_OFFER_AT // 4] = HELLO_OFFER
        with _FENCE:
            pass

    def hello(self) -> str | None:
        """The HELLO line the guest left in the page in this boot, if it did."""
        n = min(self._word(HELLO_LEN), TEXT_MAX)
        if n == 0:
            return None
        return bytes(self._page[HELLO : HELLO + n]).decode("ascii", errors="replace")

    def post(self, line: str) -> bool:
        """Put a request in the page; True when the guest sleeps and needs the wake-up byte.

        The sequence word is written after the text, then a full fence, then the guest's
        ``sleeping`` flag is read: the guest sets that flag, fences and looks at the page
        once more before it halts, so one of the two sides always sees the other.
        """
        data = line.encode("ascii")
        if len(data) >= TEXT_MAX:
            raise ValueError(f"a request is at most {TEXT_MAX - 1} bytes")
        self.seq = (self._word(REP_SEQ) + 1) & 0xFFFFFFFF
        self._page[REQ : REQ + len(data)] = data
        self._words[REQ_LEN // 4] = len(data)
        self._words[REQ_SEQ // 4] = self.seq
        with _FENCE:
            pass
        return bool(self._word(SLEEPING))

    def watch(self, on: bool) -> None:
        """Tell the guest that this side watches the page (its reply then needs no doorbell).

        Turning it off is followed by a full fence; the caller then looks at the reply once
        more, while the guest fences between writing its reply and reading this flag.
        """
        self._words[HOST_POLLING // 4] = int(on)
        if not on:
            with _FENCE:
                pass

    def reply(self) -> str | None:
        """The reply to the last posted request, once the guest wrote it; else None."""
        if self._word(REP_SEQ) != self.seq:
            return None
        n = min(self._word(REP_LEN), TEXT_MAX)
        return bytes(self._page[REP : REP + n]).decode("ascii", errors="replace")

    def release(self) -> None:
        """Drop this object's views of the page, so the engine can unmap it."""
        del self._words
        self._page.release()
