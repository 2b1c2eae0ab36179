"""KvmEngine with the real micro guest ROM: guest and host agree on guest_memfd memory
(on memfd memory where the host has no guest_memfd: helpers.NO_GMEM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.engines.kvm.objects import Mapping
from qmpgmem.engines.kvm.stats import changes
from qmpgmem.errors import UnsupportedStep
from qmpgmem.guest import protocol
from qmpgmem.scenario.model import VmSpec

from .helpers import memory_without_gmem, needs_gmem, needs_kvm

pytestmark = needs_kvm
MIB = 1 << 20

SPEC = VmSpec.model_validate(
    {
        "memory": memory_without_gmem(
            [
                {"id": "gm", "size": "16M", "backend": "guest_memfd"},
                {"id": "split", "size": "4M", "backend": "guest_memfd", "gmem_flags": []},
                {"id": "plain", "size": "4M", "backend": "ram"},
            ]
        )
    }
)


def engine(tmp_path: Path, rom: bytes) -> KvmEngine:
    return KvmEngine(SPEC, run_dir=tmp_path, boot_timeout=10, step_timeout=30, rom=rom)


async def test_boots_from_the_reset_vector(tmp_path: Path, microguest_rom: bytes) -> None:
    e = engine(tmp_path, microguest_rom)
    async with e:
        assert e.hello is not None
        assert (e.hello.sys_base, e.hello.sys_end) == (0, protocol.SYS_SIZE)
        assert e.hello.cpl == 3
        assert e.ready_after is not None and e.ready_after < 1.0


async def test_guest_and_host_agree(tmp_path: Path, microguest_rom: bytes) -> None:
    e = engine(tmp_path, microguest_rom)
    async with e:
        for region in ("gm", "split", "plain"):
            rng = e.resolve(region, MIB, 2 * MIB)
            await e.guest_write(rng, 99)
            want = protocol.pattern_hash(99, rng.offset, rng.size)
            assert await e.guest_hash(rng) == want
            assert protocol.hash_bytes(await e.host_read(rng)) == want
            back = e.resolve(region, 0, 64 * 1024)
            await e.host_write(back, protocol.pattern_bytes(7, 0, back.size))
            assert await e.guest_hash(back) == protocol.pattern_hash(7, 0, back.size)


@needs_gmem
async def test_punched_hole_reads_zero_in_the_guest(tmp_path: Path, microguest_rom: bytes) -> None:
    e = engine(tmp_path, microguest_rom)
    async with e:
        rng = e.resolve("gm", 0, 4 * MIB)
        await e.guest_write(rng, 5)
        hole = e.resolve("gm", MIB, MIB)
        await e.gmem_punch_hole(hole)
        assert await e.guest_hash(hole) == protocol.zero_hash(hole.size)
        rest = e.resolve("gm", 2 * MIB, 2 * MIB)
        assert await e.guest_hash(rest) == protocol.pattern_hash(5, rest.offset, rest.size)
        # a guest_memfd without MMAP: the guest uses the shared side, the hole is elsewhere
        split = e.resolve("split", 0, MIB)
        await e.guest_write(split, 6)
        await e.gmem_punch_hole(split)
        assert await e.guest_hash(split) == protocol.pattern_hash(6, 0, split.size)


@needs_gmem
async def test_convert_is_refused_on_kvm_pvm(tmp_path: Path, microguest_rom: bytes) -> None:
    e = KvmEngine(
        SPEC,
        run_dir=tmp_path,
        boot_timeout=10,
        step_timeout=5,
        rom=microguest_rom,
        backend="kvm_pvm",
    )
    async with e:
        with pytest.raises(UnsupportedStep, match="kvm_pvm"):
            await e.guest_convert(e.resolve("gm", 0, 4096), private=True)
        assert e.channel is not None
        await e.channel.ping()  # the guest was never sent into the hypercall


async def test_reset_reboots_the_guest(tmp_path: Path, microguest_rom: bytes) -> None:
    e = engine(tmp_path, microguest_rom)
    async with e:
        rng = e.resolve("gm", 0, MIB)
        await e.guest_write(rng, 8)
        await e.vm_reset()
        assert e.hello is not None
        # memory survives a reset, as on QEMU
        assert await e.guest_hash(rng) == protocol.pattern_hash(8, 0, rng.size)


async def test_idle_guest_halts_instead_of_polling(tmp_path: Path, microguest_rom: bytes) -> None:
    """Between requests the guest halts and its vCPU thread waits; requests still wake it.

    A polling guest makes an exit at least every 50 ms even against the UART's own wait
    (serial.py), and its thread would spend its time in KVM_RUN and Python.
    """
    import asyncio
    import os
    import time

    e = engine(tmp_path, microguest_rom)
    async with e:
        assert e.channel is not None and e._runner is not None
        await e.channel.ping()
        tid = e._runner._thread.native_id
        assert tid is not None
        stat = Path(f"/proc/self/task/{tid}/stat")

        def cpu() -> float:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        await asyncio.sleep(0.1)  # let the last reply's exits finish
        halts, exits, cpu0, t0 = e._runner.idle_halts, e._runner.exits, cpu(), time.monotonic()
        await asyncio.sleep(2.5)
        used = (cpu() - cpu0) / (time.monotonic() - t0)
        assert e._runner.idle_halts - halts >= 2  # re-halted after each IDLE_WAIT (1 s)
        assert e._runner.exits - exits <= 3 * (e._runner.idle_halts - halts)
        assert used < 0.2
        await e.note_hang("idle")  # what a hung step's log would say of this guest: it sleeps
        halts = e._runner.idle_halts
        await e.channel.ping()
        await asyncio.sleep(0.05)
        assert e._runner.idle_halts > halts  # woke for the request, then halted again
    log = (tmp_path / "kvm.log").read_text()
    idle = log.split("hang: idle\n")[1].splitlines()[0]
    assert "vCPU 0 thread" in idle and "state S" in idle, idle
    assert "futex" in idle or "(Permission denied)" in idle, idle  # the UART's wait
    assert "vCPU 0 KVM statistics in 0.2 s: " in log.split("hang: idle\n")[1].splitlines()[1]


def thp_mode() -> str:
    """The bracketed word of /sys/kernel/mm/transparent_hugepage/enabled ("" when absent)."""
    try:
        text = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return ""
    return text.split("[", 1)[1].split("]", 1)[0] if "[" in text else ""


@pytest.mark.skipif(
    thp_mode() not in ("always", "madvise"),
    reason=f"transparent huge pages are {thp_mode() or 'not built'} on this host",
)
@pytest.mark.parametrize("advised", [True, False])
async def test_first_touch_of_ram_faults_once_per_huge_page(
    tmp_path: Path, microguest_rom: bytes, monkeypatch: pytest.MonkeyPatch, advised: bool
) -> None:
    """A ram region is backed like QEMU's RAM (2 MiB aligned, MADV_HUGEPAGE), so the guest's
    first read of 16 MiB costs KVM a page fault per huge page, not one per 4 KiB page.
    Without the advice (the control, only where THP waits for advice) it is one per page."""
    if not advised:
        if thp_mode() != "madvise":
            pytest.skip("THP is 'always' here: the kernel uses huge pages without the advice")
        monkeypatch.setattr(Mapping, "advise_huge", lambda self: None)
    vm = VmSpec.model_validate({"memory": [{"id": "big", "size": "16M", "backend": "ram"}]})
    e = KvmEngine(vm, run_dir=tmp_path, boot_timeout=10, step_timeout=30, rom=microguest_rom)
    async with e:
        assert e._vcpu is not None
        stats = e._vcpu_stats[e._vcpu.fd]
        rng = e.resolve("big", 0, 16 * MIB)
        before = stats.read()
        assert await e.guest_hash(rng) == protocol.zero_hash(rng.size)
        faults = changes(before, stats.read()).get("pf_taken", 0)
    if advised:
        assert faults <= 2 * (16 * MIB // (2 * MIB)), faults
    else:
        assert faults >= 16 * MIB // 4096, faults


@pytest.mark.parametrize("boot", ["auto", "rom"])
async def test_boot_at_the_cpl3_entry_or_the_reset_vector(
    tmp_path: Path, microguest_rom: bytes, boot: str
) -> None:
    """auto: vCPU 0 starts at the ROM's 64-bit CPL3 entry; rom: at the reset vector, whose
    first instruction is real mode. Either way the guest answers, and a reset boots it again
    from the reset vector (the registers KVM gave the vCPU at creation)."""
    spec = SPEC.model_copy(update={"guest": SPEC.guest.model_copy(update={"boot": boot})})
    e = KvmEngine(spec, run_dir=tmp_path, boot_timeout=10, step_timeout=30, rom=microguest_rom)
    async with e:
        assert e.hello is not None and e.hello.cpl == 3
        direct = [ev for ev in e._events if "enters the guest at CPL3" in ev]
        assert len(direct) == (1 if boot == "auto" else 0)
        assert e._initial is not None and e._initial[1].cs.base == 0xFFFF0000  # reset state
        # auto: the payload is copied in and the ROM mapped only for the first reset; no
        # 0xF0000 alias for the micro guest: the sys area and one slot per region
        assert e._memory is not None
        regions = len(SPEC.memory)
        assert e._memory.slots == 1 + regions + (0 if boot == "auto" else 1)
        assert (e._memory.rom is None) is (boot == "auto")
        rng = e.resolve("gm", 0, 64 * 1024)
        await e.guest_write(rng, 5)
        await e.vm_reset()
        assert e._memory.rom is not None and e._memory.slots == 2 + regions
        assert e.hello is not None
        assert await e.guest_hash(rng) == protocol.pattern_hash(5, 0, 64 * 1024)
