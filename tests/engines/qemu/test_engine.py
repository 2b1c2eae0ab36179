"""QemuEngine against the real QEMU binary and the real micro guest."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.errors import VMExitedError, VMLaunchError
from qmpgmem.guest import protocol
from qmpgmem.guest.image import guest_image
from qmpgmem.scenario.model import VmSpec

pytestmark = [pytest.mark.qemu]


def _vm(**kw: object) -> VmSpec:
    spec: dict[str, object] = {
        "machine": "microvm",
        "memory": [{"id": "m0", "size": "16M"}, {"id": "m1", "size": "8M", "backend": "ram"}],
    }
    spec.update(kw)
    return VmSpec.model_validate(spec)


def _engine(qemu_binary: str, accel: str = "kvm", **kw: object) -> QemuEngine:
    return QemuEngine(
        _vm(**kw),
        qemu_binary=qemu_binary,
        accel=accel,
        boot_image=guest_image("rom"),
        boot_timeout=20,
    )


@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_guest_and_host_see_the_same_bytes(qemu_binary: str) -> None:
    async with _engine(qemu_binary) as eng:
        assert eng.channel is not None and eng.channel.hello is not None
        for region, seed in (("m0", 5), ("m1", 6)):
            rng = eng.resolve(region, 0x1000, 0x20000)
            await eng.guest_write(rng, seed)
            want = protocol.pattern_hash(seed, 0x1000, 0x20000)
            assert await eng.guest_hash(rng) == want
            assert protocol.hash_bytes(await eng.host_read(rng)) == want
        # regions do not overlap: m1's write left m0 past its range untouched
        tail = eng.resolve("m0", 0x100000, 0x1000)
        assert await eng.guest_hash(tail) == protocol.zero_hash(0x1000)
        reply = await eng.qmp("query-memdev", {})
        sizes = {m["id"]: m["size"] for m in reply["return"]}
        assert sizes["m0"] == 16 << 20 and sizes["m1"] == 8 << 20


@pytest.mark.usefixtures("no_leftovers")
async def test_tcg_runs_the_same_guest(qemu_binary: str) -> None:
    async with _engine(qemu_binary, accel="tcg") as eng:
        rng = eng.resolve("m0", 0, 0x10000)
        await eng.guest_write(rng, 9)
        assert await eng.guest_hash(rng) == protocol.pattern_hash(9, 0, 0x10000)


@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_killed_qemu_is_an_error_with_cleanup(qemu_binary: str) -> None:
    eng = _engine(qemu_binary)
    run_dir = eng.run_dir
    try:
        await eng.start()
        assert eng.process.proc is not None
        os.kill(eng.process.proc.pid, signal.SIGKILL)
        with pytest.raises(VMExitedError, match="QEMU exited"):
            await eng.guest_hash(eng.resolve("m0", 0, 0x1000))
    finally:
        await eng.stop()
    assert not run_dir.exists()


@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_paused_guest_does_not_answer(qemu_binary: str) -> None:
    async with _engine(qemu_binary) as eng:
        await eng.vm_stop()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(eng.guest_hash(eng.resolve("m0", 0, 0x1000)), 0.5)


@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_bad_qemu_args_fail_launch_with_qemu_words(qemu_binary: str) -> None:
    eng = _engine(qemu_binary, qemu_args=["-device", "no-such-device"])
    with pytest.raises(VMLaunchError) as info:
        async with eng:
            pass
    assert "no-such-device" in str(info.value)


@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_reset_reboots_the_guest_and_keeps_memory(qemu_binary: str) -> None:
    async with _engine(qemu_binary) as eng:
        rng = eng.resolve("m0", 0, 0x10000)
        await eng.guest_write(rng, 3)
        await eng.vm_reset()
        assert await eng.guest_hash(rng) == protocol.pattern_hash(3, 0, 0x10000)


def test_run_dir_is_private(tmp_path: Path, qemu_binary: str) -> None:
    eng = _engine(qemu_binary)
    try:
        assert (eng.run_dir.stat().st_mode & 0o777) == 0o700
    finally:
        asyncio.run(eng.stop())
