"""The ROM on microvm, under KVM and TCG: HELLO, the requests, the errors, EXIT, reset.

Every memory check is done twice: by the guest (HASH, ZERO) and by the host reading the
same guest-physical range through QMP pmemsave, against qmpgmem.guest.protocol.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from qmpgmem.guest import protocol as p

from .vm import REGION_GPA, Boot, GuestVM, MiB, running_guest

pytestmark = [pytest.mark.qemu]

VENDORS = {"AuthenticAMD": "AMD", "GenuineIntel": "Intel"}


async def host_read(vm: GuestVM, tmp_path: Path, gpa: int, size: int) -> bytes:
    """The bytes at [gpa, gpa+size) as QEMU sees them."""
    out = tmp_path / f"pmem-{gpa:x}-{size:x}.bin"
    await vm.execute("pmemsave", {"val": gpa, "size": size, "filename": str(out)})
    return out.read_bytes()


async def test_hello(guest: GuestVM) -> None:
    hello = guest.hello
    assert hello is not None
    assert hello.version == p.PROTOCOL_VERSION
    assert (hello.sys_base, hello.sys_end) == (0, p.SYS_SIZE)
    assert hello.cpl == 3
    cpus = await guest.execute("query-cpus-fast")
    vendor = await guest.execute("qom-get", {"path": cpus[0]["qom-path"], "property": "vendor"})
    assert hello.vendor == VENDORS.get(vendor, "other")
    assert await guest.request("PING") == "OK PONG"


# seeds, offsets and sizes: sizes not a multiple of the 4-word unroll, offsets past 2**32
VECTORS = [  # (gpa - REGION_GPA, seed, offset, size)
    (0, 0, 0, 8),
    (0x1000, 1, 0, 0x1000),
    (0x10, 1, 8, 24),
    (0x3000, p.MASK64, 0x1000, 40),
    (0x2008, 0x123456789ABCDEF, 1 << 40, 0x1000 + 8),
    (0x8000, 7, 0xFFF8, 8 * 33),
    (0x20000, 0xDEADBEEF, 0x20000, 3 * MiB + 56),
]


async def test_write_then_hash_matches_python(guest: GuestVM, tmp_path: Path) -> None:
    for rel, seed, offset, size in VECTORS:
        gpa = REGION_GPA + rel
        assert await guest.request(p.request_write(gpa, size, seed, offset)) == "OK"
        expected = p.pattern_hash(seed, offset, size)
        assert await guest.request(p.request_hash(gpa, size)) == f"OK {expected:016x}"
        seen = await host_read(guest, tmp_path, gpa, size)
        assert seen == p.pattern_bytes(seed, offset, size), (rel, seed, offset, size)


async def test_hash_of_a_sub_range(guest: GuestVM) -> None:
    gpa = REGION_GPA + 0x10000
    assert await guest.request(p.request_write(gpa, 0x3000, 5, 0)) == "OK"
    sub = p.pattern_hash(5, 0x1008, 0x808)
    assert await guest.request(p.request_hash(gpa + 0x1008, 0x808)) == f"OK {sub:016x}"
    assert await guest.request(p.request_hash(gpa, 0)) == f"OK {p.hash_bytes(b''):016x}"


async def test_zero_on_fresh_memory_then_nonzero(guest: GuestVM, tmp_path: Path) -> None:
    size = 16 * MiB
    # the guest did not touch the region while booting: the host sees zeros, so does the guest
    assert await host_read(guest, tmp_path, REGION_GPA, size) == bytes(size)
    assert await guest.request(p.request_zero(REGION_GPA, size)) == "OK ZERO"
    assert (
        await guest.request(p.request_hash(REGION_GPA, 0x4000)) == f"OK {p.zero_hash(0x4000):016x}"
    )
    assert await guest.request(p.request_write(REGION_GPA + 0x5008, 8, 1, 0)) == "OK"
    assert (
        await guest.request(p.request_zero(REGION_GPA, size))
        == f"OK NONZERO {REGION_GPA + 0x5008:x}"
    )
    assert await guest.request(p.request_zero(REGION_GPA, 0x5008)) == "OK ZERO"
    assert await guest.request(p.request_zero(REGION_GPA + 0x5010, 0x1000)) == "OK ZERO"


ERRORS = [
    ("FROB", "ERR unknown command"),
    ("ping", "ERR unknown command"),
    ("PING 1", "ERR usage: PING"),
    ("HASH 400000", "ERR usage: HASH"),
    ("WRITE 400000 8 1", "ERR usage: WRITE"),
    ("HASH 40000g 8", "ERR bad number"),
    ("HASH 0x400000 8", "ERR bad number"),
    ("HASH 400000 -8", "ERR bad number"),
    ("HASH 10000000000000000 8", "ERR bad number"),
    ("HASH 400004 8", "ERR unaligned"),
    ("HASH 400000 c", "ERR unaligned"),
    ("WRITE 400000 8 1 4", "ERR unaligned"),
    ("HASH 3ffff8 8", "ERR out of range"),  # the guest's own area
    ("ZERO 0 1000", "ERR out of range"),
    ("WRITE 100000 8 0 0", "ERR out of range"),
    ("HASH fffffff8 10", "ERR out of range"),  # crosses 4 GiB
    ("HASH 100000000 8", "ERR out of range"),  # beyond 4 GiB
    ("HASH 400000 fffffffffffffff8", "ERR out of range"),  # wraps
    ("CONVERT 400800 1000 P", "ERR unaligned"),
    ("CONVERT 400000 1000 X", "ERR usage: CONVERT"),
    ("CONVERT 1000 1000 S", "ERR out of range"),
    ("EXIT 100000000", "ERR out of range"),
    ("A B C D E F G", "ERR too many arguments"),
]


async def test_errors_keep_the_channel_in_step(guest: GuestVM) -> None:
    for request, expected in ERRORS:
        reply = await guest.request(request)
        assert reply.startswith(expected), (request, reply)
    assert await guest.request("x" * 200) == "ERR line too long"
    longest = "HASH " + "0" * (p.MAX_LINE - 13) + "400000 8"
    assert len(longest) == p.MAX_LINE
    assert await guest.request(longest) == f"OK {p.zero_hash(8):016x}"
    assert await guest.request(longest + "\r") == f"OK {p.zero_hash(8):016x}"
    assert await guest.request("0" + longest) == "ERR line too long"
    assert await guest.request(b"\n\n  \nPING\r\n") == "OK PONG"  # blank lines: no reply
    assert await guest.request("  WRITE\t400000  8 1 0 ") == "OK"


async def test_convert_without_kvm_is_refused(qemu: str, tmp_path: Path) -> None:
    """Under TCG there is no KVM to take the hypercall; the guest says so instead of #UD."""
    async with running_guest(qemu, tmp_path, Boot("rom", "tcg")) as vm:
        reply = await vm.request(p.request_convert(REGION_GPA, 0x1000, private=True))
        assert reply.startswith("ERR CONVERT needs KVM"), reply
        assert await vm.request("PING") == "OK PONG"


async def test_exit_status(guest: GuestVM) -> None:
    guest.serial.send(p.request_exit(0x2A))
    assert await guest.wait() == (0x2A << 1) | 1


async def test_reset_boots_again(qemu: str, rom_boot: Boot, tmp_path: Path) -> None:
    gpa = REGION_GPA + 0x100000
    async with running_guest(qemu, tmp_path, replace(rom_boot, no_reboot=False)) as vm:
        for _ in range(2):
            assert await vm.request(p.request_write(gpa, 0x2000, 11, 0)) == "OK"
            await vm.execute("system_reset")
            hello = await vm.serial.hello()
            assert hello.cpl == 3
            # RAM survives a reset, and booting again did not write the region
            expected = f"OK {p.pattern_hash(11, 0, 0x2000):016x}"
            assert await vm.request(p.request_hash(gpa, 0x2000)) == expected
            assert await vm.request("PING") == "OK PONG"


def test_hello_line_format_is_what_parse_hello_reads() -> None:
    line = "HELLO microguest 1 sys=0-400000 cpl=3 vendor=AMD"
    assert re.fullmatch(
        r"HELLO microguest \d+ sys=0-[0-9a-f]+ cpl=\d vendor=(AMD|Intel|other)", line
    )
    assert p.parse_hello(line) == p.Hello(1, 0, p.SYS_SIZE, 3, "AMD")
