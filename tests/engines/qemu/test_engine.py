"""QemuEngine against the real QEMU binary and the real micro guest."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from qmpgmem.engines.base import GuestRange
from qmpgmem.engines.qemu.engine import QemuEngine, QmpConnectionLost
from qmpgmem.errors import VMExitedError, VMLaunchError
from qmpgmem.guest import protocol
from qmpgmem.guest.image import guest_image
from qmpgmem.host.firmware import find_firmware
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


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize("machine", ["microvm", "q35"])
async def test_the_pvh_image_boots_through_qboot_on_microvm(qemu_binary: str, machine: str) -> None:
    qboot = find_firmware(qemu_binary).get("qboot")
    if machine == "microvm" and qboot is None:
        pytest.skip(f"no qboot.rom beside {qemu_binary} or under /usr/share/qemu")
    eng = QemuEngine(
        _vm(machine=machine, guest={"boot": "pvh"}),
        qemu_binary=qemu_binary,
        accel="tcg",  # the firmware's own speed is not the point (bench/run_all.py)
        boot_image=guest_image("pvh"),
        boot_timeout=30,
    )
    async with eng:
        assert eng.channel is not None and eng.channel.hello is not None
        argv = eng.process.argv
        bios = [argv[i + 1] for i, a in enumerate(argv) if a == "-bios"]
        assert bios == ([qboot] if machine == "microvm" else [])  # q35 keeps its SeaBIOS


@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_killed_qemu_is_an_error_with_cleanup(qemu_binary: str) -> None:
    eng = _engine(qemu_binary)
    run_dir = eng.run_dir
    try:
        await eng.start()
        assert eng.process.proc is not None
        os.kill(eng.process.proc.pid, signal.SIGKILL)
        with pytest.raises(VMExitedError, match=r"QEMU was killed by SIGKILL while guest\.verify"):
            await eng.guest_hash(eng.resolve("m0", 0, 0x1000))
    finally:
        await eng.stop()
    assert not run_dir.exists()


@pytest.mark.usefixtures("kvm_available", "no_leftovers")
@pytest.mark.parametrize(
    ("sig", "words"),
    [
        (signal.SIGKILL, "QEMU was killed by SIGKILL while guest.verify"),
        (signal.SIGSEGV, "QEMU was killed by SIGSEGV while guest.verify"),
        # QEMU handles SIGTERM itself: it exits 0 and says why
        (signal.SIGTERM, "QEMU exited (status 0) while guest.verify"),
    ],
)
async def test_qemu_killed_during_guest_io_keeps_the_signal(
    qemu_binary: str, sig: signal.Signals, words: str
) -> None:
    """The guest channel's EOF comes before QEMU is reaped; the error still names the signal."""
    async with _engine(qemu_binary) as eng:
        assert eng.process.proc is not None
        # 1 MiB where no RAM is: every guest read is a VM exit, so the hash takes seconds
        slow = GuestRange("m0", 0, 1 << 20, gpa=0x8000_0000)
        hashing = asyncio.create_task(eng.guest_hash(slow))
        await asyncio.sleep(0.2)  # the request is in flight
        assert not hashing.done()
        os.kill(eng.process.proc.pid, sig)
        with pytest.raises(VMExitedError) as info:
            await hashing
    assert words in str(info.value)
    if sig == signal.SIGTERM:
        assert "terminating on signal 15" in str(info.value)
    else:
        assert info.value.returncode == -sig


@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_sleep_watches_qemu(qemu_binary: str) -> None:
    async with _engine(qemu_binary) as eng:
        assert eng.process.proc is not None
        pid = eng.process.proc.pid
        asyncio.get_running_loop().call_later(0.2, os.kill, pid, signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(VMExitedError, match=r"QEMU was killed by SIGKILL while sleeping"):
            await eng.sleep(20)
        assert time.monotonic() - t0 < 5  # at once, not when the sleep is over


@pytest.mark.usefixtures("kvm_available", "no_leftovers")
async def test_qmp_connection_broken_while_qemu_lives(qemu_binary: str) -> None:
    """QEMU refuses a message over its JSON nesting limit with an error without an id; the
    QMP client drops the connection. Reported as what happened, not ExecInterruptedError."""
    nested: object = 0
    for _ in range(1100):  # QEMU's json-streamer allows 1024 levels
        nested = [nested]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10000)  # json.dumps recurses once per level
    try:
        async with _engine(qemu_binary) as eng:
            with pytest.raises(QmpConnectionLost) as info:
                await asyncio.wait_for(eng.qmp("qom-list", {"path": "/", "x": nested}), 20)
            assert eng.process.returncode is None  # QEMU lives
    finally:
        sys.setrecursionlimit(limit)
    text = str(info.value)
    assert "the QMP connection broke while running QMP qom-list" in text, text
    assert "QEMU is still running" in text, text
    assert "GenericError: JSON nesting depth limit exceeded" in text, text


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
