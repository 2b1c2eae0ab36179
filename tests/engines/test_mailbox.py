"""The guest channel through the mailbox page, on both engines (real QEMU, real /dev/kvm).

Why at engine level: each engine gives the page its own backend (QEMU: a memfd node; the kvm
engine: its sys mapping), and the same requests must then bypass the serial line while the
serial line keeps working for anything sent on it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qmpgmem.engines.base import Engine, GuestJob
from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.errors import GuestProtocolError
from qmpgmem.guest import protocol
from qmpgmem.guest.channel import GuestChannel
from qmpgmem.guest.image import guest_image
from qmpgmem.guest.mailbox import MBOX_GPA, MBOX_SIZE, Mailbox
from qmpgmem.scenario.model import VmSpec

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "kvm_available")]


def make(kind: str, tmp_path: Path, vcpus: int = 1) -> Engine:
    spec = VmSpec.model_validate({"vcpus": vcpus, "memory": [{"id": "r", "size": "16M"}]})
    if kind == "kvm":
        return KvmEngine(spec, boot_timeout=20, step_timeout=10, run_dir=tmp_path / "run")
    return QemuEngine(
        spec,
        qemu_binary="qemu-system-x86_64",
        accel=kind.removeprefix("qemu-"),
        boot_image=guest_image("rom"),
        run_dir_parent=tmp_path,
        boot_timeout=20,
    )


@pytest.fixture(params=["qemu-kvm", "qemu-tcg", "kvm"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Engine]:
    async with make(request.param, tmp_path) as e:
        yield e


def channel(e: Engine) -> GuestChannel:
    ch = getattr(e, "channel", None)
    assert isinstance(ch, GuestChannel)
    return ch


async def test_requests_go_through_the_mailbox(engine: Engine) -> None:
    ch = channel(engine)
    assert ch.hello is not None and ch.hello.mbox == MBOX_GPA and ch.via_mailbox
    before = ch.mailbox_requests
    rng = engine.resolve("r", 0x2000, 0x10000)
    await engine.guest_write(rng, 77)
    assert await engine.guest_hash(rng) == protocol.pattern_hash(77, 0x2000, 0x10000)
    with pytest.raises(GuestProtocolError, match="unknown command"):
        await ch.request("NOPE")
    for _ in range(20):
        await ch.ping()
    await asyncio.sleep(0.3)  # the guest is asleep now: the next request must wake it
    await ch.ping()
    assert ch.mailbox_requests - before == 24


@pytest.mark.parametrize("kind", ["qemu-kvm", "qemu-tcg", "kvm"])
@pytest.mark.parametrize("offered", [True, False], ids=["offered", "withheld"])
async def test_hello_through_the_mailbox_when_offered(
    kind: str, offered: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engines offer the page for the HELLO: one doorbell instead of a line on COM1, at
    boot and after a reset. With the offer withheld the guest says HELLO on COM1, as to a
    host that does not map the page, and the mailbox still carries the requests."""
    if not offered:
        monkeypatch.setattr(Mailbox, "offer_hello", lambda self, host_flags=0: None)
    async with make(kind, tmp_path) as e:
        ch = channel(e)
        assert ch.hello is not None and ch.hello.mbox == MBOX_GPA
        assert ch.hello_via_mailbox is offered
        if isinstance(e, KvmEngine):  # exits until the HELLO: the doorbell, IER, a HLT
            assert e._runner is not None
            exits = e._runner.exits
            assert exits <= 5 if offered else exits >= 40, exits
        await ch.ping()
        assert ch.via_mailbox
        await e.vm_reset()
        assert channel(e).hello_via_mailbox is offered
        await channel(e).ping()


async def test_the_serial_line_still_answers(engine: Engine) -> None:
    """A request written on COM1 by hand is answered there, between mailbox requests."""
    ch = channel(engine)
    await ch.ping()
    with ch.over_serial():
        assert not ch.via_mailbox
        assert await ch.request(f"HASH {0x400000:x} 8") == f"{protocol.zero_hash(8):016x}"
    await ch.ping()


async def test_reset_and_vcpu_jobs_through_the_mailbox(tmp_path: Path) -> None:
    async with make("kvm", tmp_path, vcpus=2) as e:
        ch = channel(e)
        rng = e.resolve("r", 0, 0x4000)
        [done] = await e.guest_jobs([GuestJob("write", rng, vcpu=1, seed=3)])
        assert done.apic == 1
        assert ch.via_mailbox
        await e.vm_reset()  # the new boot initialises the page again; requests carry on
        assert channel(e).via_mailbox
        assert await e.guest_hash(rng) == protocol.pattern_hash(3, 0, 0x4000)


async def test_mailbox_exchange_makes_at_most_one_exit_per_message(tmp_path: Path) -> None:
    """kvm engine: exits per PING through the page, beside the same PINGs over COM1 (each
    byte of a request and of a reply is an exit there)."""
    async with make("kvm", tmp_path) as e:
        assert isinstance(e, KvmEngine)
        ch = channel(e)

        async def exits_per_ping() -> float:
            await ch.ping()
            await asyncio.sleep(0.05)
            runner = e._runner
            assert runner is not None
            start, n = runner.exits, 50
            for _ in range(n):
                await ch.ping()
            return (runner.exits - start) / n

        via_page = await exits_per_ping()
        with ch.over_serial():
            over_serial = await exits_per_ping()
        # awake guest: no exit, or the doorbell; asleep: its HLT, the drain, the doorbell
        assert via_page <= 3.0 and 3 * via_page < over_serial, (via_page, over_serial)


@pytest.mark.serial  # timing: the guest must stay awake between two PINGs
async def test_a_watching_host_spares_the_awake_guest_its_doorbell(tmp_path: Path) -> None:
    """kvm engine: while the host watches the page for the reply, the awake guest rings no
    doorbell, so back-to-back PINGs make (almost) no exits; without the watch each reply
    is one."""
    async with make("kvm", tmp_path) as e:
        assert isinstance(e, KvmEngine)
        ch = channel(e)
        runner = e._runner
        assert runner is not None

        async def exits_per_ping(watch: float) -> float:
            ch._watch = watch
            for _ in range(3):  # the guest is awake (it watches the page) after these
                await ch.ping()
            start, n = runner.exits, 50
            for _ in range(n):
                await ch.ping()
            return (runner.exits - start) / n

        watching = await exits_per_ping(0.005)  # generous: the reply always comes first
        ringing = await exits_per_ping(0.0)
        # a guest that fell asleep between two PINGs costs 3 exits (HLT, drain, doorbell)
        assert watching <= 0.5 and ringing >= 0.9, (watching, ringing)


async def test_a_lost_doorbell_costs_time_not_the_reply(tmp_path: Path) -> None:
    """A fake guest that answers in the page but never rings: the channel looks again.

    (The real guest's doorbell is one byte on COM1; losing it cannot be asked of a real one.)
    """
    page = bytearray(MBOX_SIZE)
    mailbox = Mailbox(memoryview(page))
    page[0x14:0x18] = (0x31584F4D).to_bytes(4, "little")  # ready
    page[0x10:0x14] = (1).to_bytes(4, "little")  # "asleep": the host sends the wake-up byte
    a, b = socket.socketpair()
    reader, writer = await asyncio.open_unix_connection(sock=a)
    ch = GuestChannel(reader, writer)
    ch.hello = protocol.Hello(1, 0, protocol.SYS_SIZE, 3, "AMD", MBOX_GPA)
    ch.attach_mailbox(mailbox)
    b.setblocking(False)
    loop = asyncio.get_running_loop()

    async def fake_guest() -> bytes:
        woken = await loop.sock_recv(b, 16)  # the wake-up byte
        req = bytes(page[0x100 : 0x100 + int.from_bytes(page[8:12], "little")])
        assert req == b"PING"
        page[0x200:0x207] = b"OK PONG"
        page[0x0C:0x10] = (7).to_bytes(4, "little")
        page[0x04:0x08] = page[0x00:0x04]  # the reply, no doorbell
        return woken + await loop.sock_recv(b, 16)  # the second wake-up after the recheck

    guest_task = asyncio.create_task(fake_guest())
    await asyncio.wait_for(ch.ping(), 2)
    assert (await asyncio.wait_for(guest_task, 2)).startswith(b"\0")
    ch.close()
    b.close()
