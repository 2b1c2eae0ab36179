"""The micro guest ROM's header (offset 0xffc0 of the 64 KiB image, images/microguest/rom.S).

Why an engine reads it: the kvm engine builds its own VM and must tell the guest's idle
``hlt`` (resume it once a request is there) from the ``hlt`` that ends a faulted guest; the
header names the RIP that follows the idle one, and the 64-bit CPL3 entry the engine can start
the guest at directly (engines/kvm/guest_entry.py), with the payload copied already or not.
docs/guest-protocol.md has the table.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

ROM_SIZE: Final = 64 * 1024
HEADER_OFFSET: Final = 0xFFC0
MAGIC: Final = b"QMGUEST\0"
_LAYOUT: Final = struct.Struct("<8s10I")  # the last word: payload_entry


@dataclass(frozen=True)
class RomHeader:
    version: int
    protocol: int
    entry16: int  # offset in the ROM (IP with CS base 0xffff0000)
    entry32: int  # physical address
    sys_size: int
    payload: int
    payload_size: int
    #: RIP right after the guest's idle ``hlt``; 0 when the guest never halts to wait
    idle_rip: int
    #: 64-bit CPL3 entry (in the ROM), for a VMM that builds the boot state itself; 0: none
    user_entry: int
    #: the same entry in the payload, for a VMM that also copied the payload to ``payload``
    #: itself (then the ROM need not be mapped to boot); 0: none (an older ROM)
    payload_entry: int = 0

    def payload_image(self, rom: bytes) -> bytes:
        """The payload's bytes (ROM offset 0), as ``user_entry`` copies them."""
        return rom[: self.payload_size]


def rom_header(rom: bytes) -> RomHeader | None:
    """The header of a micro guest ROM; None for any other image (no magic)."""
    if len(rom) != ROM_SIZE:
        return None
    magic, *fields = _LAYOUT.unpack_from(rom, HEADER_OFFSET)
    if magic != MAGIC:
        return None
    return RomHeader(*fields)
