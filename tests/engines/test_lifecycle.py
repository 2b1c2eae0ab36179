"""Pause, resume and reset mean the same on both engines (real QEMU, real /dev/kvm).

Why at engine level: a reset of a paused VM keeps it paused and the guest's restart
completes on the next cont; both engines must do exactly that, whatever the runner does
with it. The QEMU engine also treats a raw QMP ``system_reset`` (and ``stop``/``cont``) as
the lifecycle primitives, so a guest step after it finds the rebooted guest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qmpgmem.engines.base import Engine, GuestJob
from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.guest.channel import GuestChannel
from qmpgmem.guest.image import guest_image
from qmpgmem.guest.protocol import pattern_hash
from qmpgmem.scenario.model import VmSpec

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "kvm_available")]


def make(kind: str, tmp_path: Path, vcpus: int) -> Engine:
    spec = VmSpec.model_validate({"vcpus": vcpus, "memory": [{"id": "r", "size": "16M"}]})
    if kind == "kvm":
        return KvmEngine(spec, boot_timeout=20, step_timeout=10, run_dir=tmp_path / "run")
    return QemuEngine(
        spec,
        qemu_binary="qemu-system-x86_64",
        accel="kvm",
        boot_image=guest_image("rom"),
        run_dir_parent=tmp_path,
        boot_timeout=20,
    )


@pytest.fixture(params=[("qemu", 1), ("kvm", 1), ("qemu", 2), ("kvm", 2)], ids=str)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    kind, vcpus = request.param
    e = make(kind, tmp_path, vcpus)
    async with e:
        yield e


def channel(e: Engine) -> GuestChannel:
    ch = getattr(e, "channel", None)
    assert isinstance(ch, GuestChannel)
    return ch


async def assert_paused(e: Engine) -> None:
    """The vCPUs do not run: QEMU says so, the kvm engine holds every vCPU thread.

    (Asked without a request to the guest: a line sent to a paused guest would be answered
    after the next cont, and the runner refuses guest steps while paused anyway.)
    """
    if isinstance(e, QemuEngine):
        reply = await e.qmp("query-status", {})
        assert reply["return"]["running"] is False, reply
    else:
        assert isinstance(e, KvmEngine)
        await asyncio.sleep(0.2)
        runners = e._all_runners()
        assert runners and all(r.held for r in runners)


async def test_reset_of_a_paused_vm_keeps_it_paused_until_cont(engine: Engine) -> None:
    rng = engine.resolve("r", 0, 8192)
    await engine.guest_write(rng, 4)
    await engine.vm_stop()
    t0 = time.monotonic()
    await asyncio.wait_for(engine.vm_reset(), 5)  # returns at once: no HELLO while paused
    assert time.monotonic() - t0 < 3
    assert channel(engine).hello is None
    await assert_paused(engine)
    await asyncio.wait_for(engine.vm_cont(), 20)  # the restart completes here
    assert channel(engine).hello is not None
    assert await engine.guest_hash(rng) == pattern_hash(4, 0, 8192)  # memory survives
    vcpus = len(channel(engine).apic_ids)
    if vcpus > 1:  # the APs came back with the restart
        (seen,) = await engine.guest_jobs([GuestJob("hash", rng, vcpus - 1)])
        assert seen.apic == vcpus - 1 and seen.value == pattern_hash(4, 0, 8192)


async def test_two_resets_while_paused_then_one_cont(engine: Engine) -> None:
    await engine.vm_stop()
    await asyncio.wait_for(engine.vm_reset(), 5)
    await asyncio.wait_for(engine.vm_reset(), 5)
    await asyncio.wait_for(engine.vm_cont(), 20)
    await asyncio.wait_for(channel(engine).ping(), 5)


async def test_stop_twice_then_cont(engine: Engine) -> None:
    await engine.vm_stop()
    await engine.vm_stop()
    await assert_paused(engine)
    await engine.vm_cont()
    await asyncio.wait_for(channel(engine).ping(), 5)


@pytest.fixture
async def qemu(tmp_path: Path) -> AsyncIterator[QemuEngine]:
    e = make("qemu", tmp_path, 2)
    assert isinstance(e, QemuEngine)
    async with e:
        yield e


async def test_qmp_system_reset_is_a_reset(qemu: QemuEngine) -> None:
    rng = qemu.resolve("r", 0, 4096)
    await qemu.guest_write(rng, 3)
    reply = await asyncio.wait_for(qemu.qmp("system_reset", {}), 20)
    assert reply == {"return": {}}
    assert await qemu.guest_hash(rng) == pattern_hash(3, 0, 4096)
    (seen,) = await qemu.guest_jobs([GuestJob("hash", rng, 1)])
    assert seen.apic == 1  # the APs were started again


async def test_qmp_stop_reset_cont_are_the_lifecycle_primitives(qemu: QemuEngine) -> None:
    assert await qemu.qmp("stop", {}) == {"return": {}}
    assert await asyncio.wait_for(qemu.qmp("system_reset", {}), 5) == {"return": {}}
    await assert_paused(qemu)
    assert await asyncio.wait_for(qemu.qmp("cont", {}), 20) == {"return": {}}
    assert channel(qemu).hello is not None
    await asyncio.wait_for(channel(qemu).ping(), 5)
