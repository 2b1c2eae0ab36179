"""The micro guest's several-vCPU protocol on both engines (real QEMU, real /dev/kvm).

Why at engine level: the runner tests check what a scenario sees; these pin the wire (SMP,
@k, ARM/GO/RESULT and their refusals), the APIC ID each vCPU answers with, and that a reset
and a pause bring every vCPU back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qmpgmem.engines.base import Engine, GuestJob
from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.errors import GuestProtocolError
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
        accel=kind.removeprefix("qemu-"),
        boot_image=guest_image("rom"),
        run_dir_parent=tmp_path,
    )


@pytest.fixture(params=["qemu-kvm", "kvm", "qemu-tcg"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    e = make(request.param, tmp_path, 3)
    async with e:
        yield e


def channel(e: Engine) -> GuestChannel:
    ch = getattr(e, "channel", None)
    assert isinstance(ch, GuestChannel)
    return ch


async def test_every_vcpu_answers_with_its_apic_id(engine: Engine) -> None:
    ch = channel(engine)
    assert ch.apic_ids == [0, 1, 2]
    for k in (2, 1, 0):
        assert await ch.request_apic(f"@{k} PING") == (k, "PONG")
    assert await ch.request_apic("PING") == (None, "PONG")  # the one-vCPU form is unchanged


async def test_jobs_run_where_they_say_and_see_each_other(engine: Engine) -> None:
    a, b = engine.resolve("r", 0, 1 << 20), engine.resolve("r", 1 << 20, 1 << 20)
    wrote = await engine.guest_jobs([GuestJob("write", a, 1, seed=3), GuestJob("write", b, 2, 4)])
    assert [w.apic for w in wrote] == [1, 2]
    seen = await engine.guest_jobs([GuestJob("hash", b, 0), GuestJob("hash", a, 2)])
    assert [(s.apic, s.value) for s in seen] == [
        (0, pattern_hash(4, b.offset, b.size)),
        (2, pattern_hash(3, a.offset, a.size)),
    ]


async def test_refusals_keep_the_channel_in_step(engine: Engine) -> None:
    ch = channel(engine)
    cases = {
        "@3 PING": "no such vCPU",
        "@1 EXIT 0": "EXIT runs on vCPU 0 only",
        "RESULT 1": "no result",
        "ARM 1": "usage: ARM",
        "SMP 9": "out of range",
    }
    for line, why in cases.items():
        with pytest.raises(GuestProtocolError, match=why):
            await ch.request(line)
    assert await ch.request("ARM 1 PING") == "ARMED"
    with pytest.raises(GuestProtocolError, match="busy"):
        await ch.request("ARM 1 HASH 400000 8")
    assert await ch.request("GO") == "GO 1"
    assert await ch.request_apic("RESULT 1") == (1, "PONG")
    assert await ch.request("GO") == "GO 0"  # nothing armed: nothing to wait for
    # a job's own error comes back in its reply, from the vCPU that ran it
    with pytest.raises(GuestProtocolError, match="unaligned"):
        await ch.request("@2 HASH 400001 8")
    assert await ch.request_apic("@2 PING") == (2, "PONG")


async def test_reset_and_pause_bring_every_vcpu_back(engine: Engine) -> None:
    rng = engine.resolve("r", 0, 4096)
    await engine.guest_jobs([GuestJob("write", rng, 2, seed=9)])
    await engine.vm_stop()
    await engine.vm_cont()
    (seen,) = await engine.guest_jobs([GuestJob("hash", rng, 1)])
    assert seen == type(seen)(1, pattern_hash(9, 0, 4096))
    await engine.vm_reset()
    assert channel(engine).apic_ids == [0, 1, 2]
    (seen,) = await engine.guest_jobs([GuestJob("hash", rng, 2)])
    assert seen.apic == 2 and seen.value == pattern_hash(9, 0, 4096)  # memory survives
