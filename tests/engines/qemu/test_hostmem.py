"""The QEMU engine's in-place host reads (engines/qemu/hostmem.py) against pmemsave.

Why pmemsave is the reference: it is QEMU's own view of guest-physical memory. Every path
that reads a RAM block's pages in place (the backend file, map_files, QEMU's fd,
/proc/PID/mem) must hash to what pmemsave's copy hashes to, on each backend, at unaligned
offsets, and after the guest wrote again (a kept mapping is never a stale copy).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.engines.qemu.hostmem import (
    QemuRam,
    _qemu_fd,
    find_vma,
    parse_maps,
    parse_ramblocks,
)
from qmpgmem.guest import protocol
from qmpgmem.guest.image import guest_image
from qmpgmem.scenario.model import VmSpec

# x-query-ramblock of QEMU 10.0.2 for a microvm with two regions (abridged).
RAMBLOCKS = """\
              Block Name    PSize              Offset               Used              Total                HVA  RO
                    fast    4 KiB  0x0000000000400000 0x0000000001000000 0x0000000001000000 0x00007f4e2efff000  rw
             qmpgmem-sys    4 KiB  0x0000000000000000 0x0000000000400000 0x0000000000400000 0x00007f4e34e00000  rw
    /rom@etc/acpi/tables    4 KiB  0x0000000001c40000 0x0000000000001000 0x0000000000200000 0x00007f4e2da00000  ro
"""  # noqa: E501
MAPS = """\
55ad3c626000-55ad3cff9000 rw-p 00000000 00:00 0                          [heap]
7f4e2efff000-7f4e2ffff000 rw-s 00000000 00:01 1033                       /memfd:memory-backend-memfd (deleted)
7f4e34e00000-7f4e35200000 rw-p 00000000 00:00 0 
"""  # noqa: E501, W291


def test_ramblock_rows_and_mappings_parse() -> None:
    blocks = parse_ramblocks(RAMBLOCKS)
    assert [(b.name, b.used, b.hva) for b in blocks] == [
        ("fast", 16 << 20, 0x7F4E2EFFF000),
        ("qmpgmem-sys", 4 << 20, 0x7F4E34E00000),
        ("/rom@etc/acpi/tables", 0x1000, 0x7F4E2DA00000),
    ]
    vmas = parse_maps(MAPS)
    memfd = find_vma(vmas, 0x7F4E2EFFF000 + 0x1000, 0x2000)
    assert memfd is not None and memfd.shared and memfd.inode == 1033
    assert memfd.path == "/memfd:memory-backend-memfd (deleted)"
    sys_area = find_vma(vmas, 0x7F4E34E00000, 4 << 20)
    assert sys_area is not None and not sys_area.shared and sys_area.path == ""
    assert find_vma(vmas, 0x7F4E2FFFF000 - 8, 16) is None  # crosses the mapping's end


REGIONS = [
    ({"id": "memfd", "size": "8M", "backend": "memfd"}, "map_files"),
    ({"id": "anon", "size": "8M", "backend": "ram"}, "/proc/PID/mem"),
    ({"id": "shared", "size": "8M", "backend": "ram", "share": True}, "map_files"),
    ({"id": "filed", "size": "8M", "backend": "file"}, "backend file"),
]


@pytest.mark.qemu
@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_every_backend_reads_in_place_as_pmemsave_sees_it(qemu_binary: str) -> None:
    vm = VmSpec.model_validate({"machine": "microvm", "memory": [r for r, _ in REGIONS]})
    eng = QemuEngine(vm, qemu_binary=qemu_binary, accel="kvm", boot_image=guest_image("rom"))
    async with eng:
        for seed, (region, via) in enumerate(REGIONS, start=3):
            rng = eng.resolve(region["id"], 0x3008, 0x21010)  # not page aligned at either end
            await eng.guest_write(rng, seed)
            got = await eng.host_hash(rng)
            want = protocol.pattern_hash(seed, rng.offset, rng.size)
            assert (got.value, got.via) == (want, via), region
            assert protocol.hash_bytes(await eng.host_read(rng)) == want  # pmemsave agrees
            await eng.guest_write(rng, seed + 100)  # the kept mapping sees the new bytes
            again = await eng.host_hash(rng)
            assert again.value == protocol.pattern_hash(seed + 100, rng.offset, rng.size)
            untouched = await eng.host_hash(eng.resolve(region["id"], 4 << 20, 1 << 20))
            assert untouched.value == protocol.zero_hash(1 << 20)


@pytest.mark.qemu
@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_what_no_block_holds_is_left_to_pmemsave(qemu_binary: str) -> None:
    vm = VmSpec.model_validate({"machine": "microvm", "memory": [REGIONS[0][0]]})
    eng = QemuEngine(vm, qemu_binary=qemu_binary, accel="kvm", boot_image=guest_image("rom"))
    async with eng:
        assert eng.process.proc is not None
        pid = eng.process.proc.pid
        reply = await eng.qmp("x-query-ramblock", {})
        blocks = parse_ramblocks(reply["return"]["human-readable-text"])
        ram = QemuRam(pid)
        try:
            assert ram.hash(blocks, "no-such-block", 0, 4096) is None
            assert ram.hash(blocks, "memfd", (8 << 20) - 4096, 8192) is None  # past its end
            # Without map_files (no CAP_SYS_ADMIN), QEMU's own fd of the memfd is found.
            rb = next(b for b in blocks if b.name == "memfd")
            vma = find_vma(parse_maps(Path(f"/proc/{pid}/maps").read_text()), rb.hva, 4096)
            assert vma is not None
            fd = _qemu_fd(pid, vma)
            assert fd is not None
            try:
                assert os.fstat(fd).st_ino == vma.inode
            finally:
                os.close(fd)
        finally:
            ram.close()


@pytest.mark.qemu
@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_a_qemu_refusing_x_query_ramblock_is_read_with_pmemsave(qemu_binary: str) -> None:
    """``-compat unstable-input=reject`` makes QEMU refuse x- commands: pmemsave remains."""
    vm = VmSpec.model_validate(
        {
            "machine": "microvm",
            "memory": [REGIONS[0][0]],
            "qemu_args": ["-compat", "unstable-input=reject"],
        }
    )
    eng = QemuEngine(vm, qemu_binary=qemu_binary, accel="kvm", boot_image=guest_image("rom"))
    async with eng:
        rng = eng.resolve("memfd", 0x1000, 0x10000)
        await eng.guest_write(rng, 21)
        got = await eng.host_hash(rng)
        assert (got.value, got.via) == (protocol.pattern_hash(21, 0x1000, 0x10000), "pmemsave")
