"""KvmEngine.host_hash: the region's own mapping hashed in place, against host_read's copy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qmpgmem.engines.kvm import host_access
from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.errors import UnsupportedStep
from qmpgmem.guest import protocol
from qmpgmem.scenario.model import VmSpec

from .helpers import needs_kvm

pytestmark = needs_kvm
MIB = 1 << 20

REGIONS = [
    (
        {"id": "gm", "size": "4M", "backend": "guest_memfd", "gmem_flags": []},
        "guest_memfd's shared mapping",
    ),
    (
        {
            "id": "inplace",
            "size": "4M",
            "backend": "guest_memfd",
            "gmem_flags": ["mmap", "init_shared"],
        },
        "guest_memfd mmap",
    ),
    ({"id": "plain", "size": "4M", "backend": "memfd"}, "memfd mapping"),
    ({"id": "anon", "size": "4M", "backend": "ram"}, "ram mapping"),
    ({"id": "filed", "size": "4M", "backend": "file"}, "file mapping"),
]


@pytest.mark.parametrize("chunk", [host_access.CHUNK, 64 << 10], ids=["chunk64M", "chunk64K"])
async def test_in_place_hash_is_the_hash_of_the_copy(
    tmp_path: Path, minirom: bytes, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Also in chunks of 64 KiB: hashes and writes over many chunks, unaligned to them."""
    monkeypatch.setattr(host_access, "CHUNK", chunk)
    vm = VmSpec.model_validate({"memory": [r for r, _ in REGIONS]})
    e = KvmEngine(vm, run_dir=tmp_path / "run", boot_timeout=5, step_timeout=5, rom=minirom)
    try:
        await e.start()
    except UnsupportedStep as exc:  # a KVM without guest_memfd MMAP | INIT_SHARED
        pytest.skip(str(exc))
    try:
        for region, via in REGIONS:
            # small (in the event loop) and big (in a worker thread), unaligned at both ends
            for offset, size in ((0x1008, 0x2FF0), (0x8, 2 * MIB + 0x10)):
                rng = e.resolve(region["id"], offset, size)
                await e.host_write(rng, os.urandom(size))
                got = await e.host_hash(rng)
                assert got.via == via
                assert got.value == protocol.hash_bytes(await e.host_read(rng)), (region, size)
    finally:
        await e.stop()


async def test_a_mapping_the_host_may_not_touch_is_refused(tmp_path: Path, minirom: bytes) -> None:
    vm = VmSpec.model_validate(
        {"memory": [{"id": "priv", "size": "2M", "backend": "guest_memfd", "gmem_flags": ["mmap"]}]}
    )
    e = KvmEngine(vm, run_dir=tmp_path / "run", boot_timeout=5, step_timeout=5, rom=minirom)
    try:
        await e.start()
    except UnsupportedStep as exc:
        pytest.skip(str(exc))
    try:
        with pytest.raises(UnsupportedStep, match="SIGBUS"):
            await e.host_hash(e.resolve("priv", 0, 8))
    finally:
        await e.stop()
