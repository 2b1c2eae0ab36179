"""KvmEngine on the real KVM with the throw-away ROM (helpers.py): lifecycle and host access.

The lifecycle tests run on every host with a KVM: where it offers no guest_memfd with MMAP and
INIT_SHARED, their regions are memfd regions of the same names and sizes. The tests of what a
guest_memfd region does skip there, with the reason.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from qmpgmem.engines.kvm.backend import kvm_backend
from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.errors import EngineError, UnsupportedStep, VMExitedError, VMLaunchError
from qmpgmem.scenario.model import VmSpec

from .helpers import NO_GMEM, host_lacks, memory_without_gmem, needs_gmem, needs_kvm

pytestmark = needs_kvm
MIB = 1 << 20


def spec(gmem: bool = False, **kw: object) -> VmSpec:
    """Four regions, three of them guest_memfd (in place, mmap without INIT_SHARED, and
    paired with a shared side) where the host has it or ``gmem`` asks for them anyway."""
    memory: list[dict[str, object]] = [
        {"id": "gm", "size": "4M", "backend": "guest_memfd"},
        {"id": "plain", "size": "2M", "backend": "memfd"},
        {"id": "priv", "size": "2M", "backend": "guest_memfd", "gmem_flags": ["mmap"]},
        {"id": "split", "size": "2M", "backend": "guest_memfd", "gmem_flags": []},
    ]
    return VmSpec.model_validate({"memory": memory if gmem else memory_without_gmem(memory), **kw})


def engine(tmp_path: Path, rom: bytes, vm: VmSpec | None = None, **kw: object) -> KvmEngine:
    return KvmEngine(
        vm or spec(),
        run_dir=tmp_path / "run",
        boot_timeout=5,
        step_timeout=5,
        rom=rom,
        **kw,  # type: ignore[arg-type]
    )


async def test_boot_ping_and_layout(tmp_path: Path, minirom: bytes) -> None:
    e = engine(tmp_path, minirom)
    async with e:
        assert e.hello is not None and e.hello.version == 1
        assert e.ready_after is not None and e.ready_after < 1.0
        assert e.channel is not None
        await e.channel.ping()
        # regions follow the 4 MiB sys area in the scenario's order
        assert e.resolve("gm", 0, 8).gpa == 4 * MIB
        assert e.resolve("plain", 16, 8).gpa == 8 * MIB + 16
        assert e.resolve("split", 0, 8).gpa == 12 * MIB
        with pytest.raises(ValueError, match="does not fit"):
            e.resolve("plain", 2 * MIB - 4, 8)
        with pytest.raises(KeyError, match="nope"):
            e.resolve("nope", 0, 8)
    log = (tmp_path / "run" / "kvm.log").read_text()
    backend = "guest_memfd" if NO_GMEM is None else "memfd"
    assert "HELLO after" in log and f"region gm {backend} at GPA 0x400000" in log
    assert (tmp_path / "run" / "serial.log").read_text().count("HELLO microguest") == 1
    assert set(e.artifacts.files) == {"serial", "kvm"}


@needs_gmem
async def test_host_access_and_gmem_ops(tmp_path: Path, minirom: bytes) -> None:
    e = engine(tmp_path, minirom)
    async with e:
        for region in ("gm", "plain", "split"):
            rng = e.resolve(region, 8192, 8192)
            data = bytes(range(256)) * 32
            await e.host_write(rng, data)
            assert await e.host_read(rng) == data
        gm = e.resolve("gm", 8192, 4096)
        await e.gmem_punch_hole(gm)
        assert await e.host_read(gm) == bytes(4096)
        assert await e.host_read(e.resolve("gm", 12288, 4)) == bytes(range(4))  # page after
        await e.gmem_allocate(e.resolve("gm", 0, 4 * MIB))
        with pytest.raises(EngineError, match=r"^punching a hole in region gm: .*Invalid argument"):
            await e.gmem_punch_hole(e.resolve("gm", 1, 4096))
        with pytest.raises(EngineError, match=r"^allocating region gm: .*Invalid argument"):
            await e.gmem_allocate(e.resolve("gm", 1, 4096))
        with pytest.raises(UnsupportedStep, match="not guest_memfd"):
            await e.gmem_punch_hole(e.resolve("plain", 0, 4096))
        with pytest.raises(UnsupportedStep, match="SIGBUS"):
            await e.host_read(e.resolve("priv", 0, 8))
        with pytest.raises(EngineError, match="bytes into"):
            await e.host_write(e.resolve("plain", 0, 8), b"short")


async def test_big_copies_go_through_a_thread(tmp_path: Path, minirom: bytes) -> None:
    e = engine(tmp_path, minirom)
    async with e:
        rng = e.resolve("gm", 0, 4 * MIB)
        await e.host_write(rng, b"\x11" * (4 * MIB))
        assert await e.host_read(rng) == b"\x11" * (4 * MIB)


async def test_guest_exit_ends_the_channel(tmp_path: Path, minirom: bytes) -> None:
    e = engine(tmp_path, minirom)
    async with e:
        assert e.channel is not None
        await e.channel.exit(0)
        with pytest.raises(VMExitedError, match="isa-debug-exit") as err:
            await e.channel.ping()
        assert err.value.returncode == (5 << 1) | 1


async def test_halt_is_reported(tmp_path: Path, minirom: bytes) -> None:
    e = engine(tmp_path, minirom)
    async with e:
        assert e.channel is not None
        with pytest.raises(VMExitedError, match="halted"):
            await e.channel.request("HALT")


async def test_stop_interrupts_a_guest_that_never_exits(tmp_path: Path, minirom: bytes) -> None:
    e = engine(tmp_path, minirom)
    await e.start()
    assert e.channel is not None
    e.channel._writer.write(b"SPIN\n")
    await asyncio.sleep(0.05)
    runner = e._runner
    assert runner is not None and runner.running
    await asyncio.wait_for(e.stop(), 5)
    assert not runner.running
    assert e.end is not None and e.end.reason == "stopped"


async def test_pause_resume_and_reset(tmp_path: Path, minirom: bytes) -> None:
    e = engine(tmp_path, minirom)
    async with e:
        assert e.channel is not None
        await e.vm_stop()
        ping = asyncio.create_task(e.channel.ping())
        await asyncio.sleep(0.1)
        assert not ping.done()  # the paused guest cannot answer
        await e.vm_cont()
        await asyncio.wait_for(ping, 5)
        await e.vm_reset()
        await e.channel.ping()
    assert (tmp_path / "run" / "serial.log").read_text().count("HELLO microguest") == 2


async def test_reset_after_stop_cont_runs_again_every_time(tmp_path: Path, minirom: bytes) -> None:
    """A kick left over from the old vCPU thread must not freeze the new one (fuzz finding)."""
    e = engine(tmp_path, minirom)
    async with e:
        assert e.channel is not None
        for _ in range(25):
            await e.vm_stop()
            await e.vm_cont()
            await asyncio.wait_for(e.vm_reset(), 5)
            await asyncio.wait_for(e.channel.ping(), 5)


@needs_gmem
async def test_guest_convert_refused_where_hypercalls_hang(tmp_path: Path, minirom: bytes) -> None:
    e = engine(tmp_path, minirom, backend="kvm_pvm")
    async with e:
        with pytest.raises(UnsupportedStep, match=r"KVM backend kvm_pvm: .*never returns"):
            await e.guest_convert(e.resolve("gm", 0, 4096), private=True)


@pytest.mark.skipif(kvm_backend() != "kvm_pvm", reason="needs a kvm_pvm host")
def test_backend_probe_on_this_host() -> None:
    assert kvm_backend() == "kvm_pvm"


async def test_hypercall_refused_without_private_memory(tmp_path: Path, minirom: bytes) -> None:
    """The handler's answer for a default VM, given a hypercall exit as KVM would fill it."""
    from qmpgmem.engines.kvm import abi

    e = engine(tmp_path, minirom)

    async with e:
        hc = abi._kvm_run_hypercall(nr=abi.KVM_HC_MAP_GPA_RANGE)
        hc.args[0], hc.args[1], hc.args[2] = 4 * MIB, 1, abi.KVM_MAP_GPA_RANGE_ENCRYPTED
        e._on_hypercall(hc)
        assert hc.ret == (-1000) & ((1 << 64) - 1)  # -KVM_ENOSYS, as documented
        hc.nr = 99
        e._on_hypercall(hc)
        assert hc.ret == (-1000) & ((1 << 64) - 1)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"vm_type": "sev-snp"}, "launch flow"),
        ({"accel": "tcg"}, "tcg"),
        ({"guest": {"boot": "pvh"}}, "PVH"),
    ],
)
async def test_unsupported_specs(
    tmp_path: Path, minirom: bytes, changes: dict[str, object], match: str
) -> None:
    with pytest.raises(UnsupportedStep, match=match):
        async with engine(tmp_path, minirom, spec(**changes)):
            pass


async def test_vm_type_not_offered(tmp_path: Path, minirom: bytes) -> None:
    from qmpgmem.engines.kvm import abi
    from qmpgmem.engines.kvm.objects import Kvm

    with Kvm() as kvm:
        offered = kvm.check_extension(abi.Cap.VM_TYPES)
    if offered & (1 << abi.VmType.SW_PROTECTED):
        pytest.skip("this host offers sw-protected VMs")
    with pytest.raises(UnsupportedStep, match=r"does not offer VM type sw-protected"):
        async with engine(tmp_path, minirom, spec(vm_type="sw-protected")):
            pass


async def test_flags_not_offered_are_a_skip(tmp_path: Path, minirom: bytes) -> None:
    from qmpgmem.engines.kvm import abi
    from qmpgmem.engines.kvm.objects import Kvm

    with Kvm() as kvm, kvm.create_vm() as vm:
        offered = vm.check_extension(abi.Cap.GUEST_MEMFD_FLAGS)
    if offered & abi.GUEST_MEMFD_FLAG_INIT_SHARED:
        pytest.skip("every flag the model knows is offered here")
    no_gmem = host_lacks("guest_memfd")
    refusal = "KVM offers no guest_memfd for VM type 0" if no_gmem else "GUEST_MEMFD_FLAGS"
    with pytest.raises(UnsupportedStep, match=refusal):
        async with engine(tmp_path, minirom, spec(gmem=True)):
            pass


async def test_no_hello_is_a_launch_error(tmp_path: Path) -> None:
    rom = bytearray(64 << 10)
    rom[0xFFF0:0xFFF2] = b"\xeb\xfe"  # jmp $: spins at the reset vector, never says HELLO
    e = KvmEngine(spec(), run_dir=tmp_path, boot_timeout=0.3, step_timeout=1, rom=bytes(rom))
    with pytest.raises(VMLaunchError, match="did not say HELLO"):
        async with e:
            pass
    assert e._runner is not None and not e._runner.running


async def test_guest_dying_before_hello_is_a_launch_error(tmp_path: Path) -> None:
    rom = bytearray(64 << 10)
    rom[0xFFF0:0xFFF3] = b"\xb0\x07\xe6"  # mov $7,%al; out %al,$0xf4 (isa-debug-exit)
    rom[0xFFF3] = 0xF4
    e = KvmEngine(spec(), run_dir=tmp_path, boot_timeout=5, step_timeout=1, rom=bytes(rom))
    with pytest.raises(VMLaunchError, match=r"stopped before HELLO.*isa-debug-exit"):
        await e.start()
    await e.stop()


@needs_gmem
async def test_map_gpa_range_answers(tmp_path: Path, minirom: bytes) -> None:
    """The VMM's answers besides the default-VM refusal, with the real kernel behind them.

    This host's VMs have no private memory, so the handler is told the VM has it: the
    range checks answer first, and KVM_SET_MEMORY_ATTRIBUTES then refuses, which the guest
    must get as -errno.
    """
    from qmpgmem.engines.kvm import abi

    e = engine(tmp_path, minirom)
    async with e:
        conv = e._conversions
        assert conv is not None
        conv.private_mem = True
        enc = abi.KVM_MAP_GPA_RANGE_ENCRYPTED
        assert conv.map_gpa_range(0, 1, enc) == -22  # the sys area is no guest_memfd region
        assert conv.map_gpa_range(8 * MIB, 1, enc) == -22  # a memfd region
        assert conv.map_gpa_range(4 * MIB, 0, enc) == -22  # empty
        assert conv.map_gpa_range(4 * MIB, 2048, enc) == -22  # runs past the region's end
        ret = conv.map_gpa_range(4 * MIB, 1, enc)
        assert ret in (-22, -25)  # EINVAL, or ENOTTY without memory attributes


@needs_gmem
async def test_discarding_the_other_side(tmp_path: Path, minirom: bytes) -> None:
    from qmpgmem.engines.kvm.conversion import discard_other_side

    e = engine(tmp_path, minirom)
    async with e:
        assert e._memory is not None
        split = e._memory.region("split")
        assert not split.in_place and split.gmem is not None
        split.mapping.write(0, b"\x77" * 8192)
        discard_other_side(split, 0, 4096, private=True)  # shared pages freed
        assert split.mapping.read(0, 8192) == bytes(4096) + b"\x77" * 4096
        discard_other_side(split, 0, 4096, private=False)  # punches the guest_memfd
        gm = e._memory.region("gm")
        gm.mapping.write(0, b"\x55" * 4096)
        discard_other_side(gm, 0, 4096, private=False)  # in place: nothing to discard
        assert gm.mapping.read(0, 4096) == b"\x55" * 4096


async def test_sleep_ends_when_the_guest_ends_the_vm(tmp_path: Path, minirom: bytes) -> None:
    e = engine(tmp_path, minirom)
    async with e:
        channel = e.channel
        assert channel is not None
        await e.sleep(0.05)  # a guest that runs on: the sleep just passes
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, lambda: asyncio.ensure_future(channel.exit(0)))
        t0 = loop.time()
        with pytest.raises(VMExitedError, match="isa-debug-exit"):
            await e.sleep(20)
        assert loop.time() - t0 < 5


HANGING_WRITE = """\
name: hanging-write
description: A write the spinning test ROM never answers.
vm:
  memory:
    - {id: plain, size: 2M, backend: memfd}
steps:
  - action: guest.write
    range: {region: plain, offset: 0, size: 4096}
    seed: 1
    timeout: 0.5s
"""


async def test_a_hung_step_leaves_each_vcpus_kernel_state_in_the_log(
    tmp_path: Path, minirom: bytes
) -> None:
    """The step runner asks the engine what it sees of a step that timed out: the test ROM
    told to SPIN runs in KVM_RUN all along (state R, its CPU time in the kernel or the guest,
    not in Python). test_microguest has the idle guest's sleeping thread beside it."""
    from qmpgmem.report.result import Status
    from qmpgmem.scenario.loader import load_scenario
    from qmpgmem.step_runner import StepRunner

    path = tmp_path / "hanging-write.yaml"
    path.write_text(HANGING_WRITE)
    loaded = load_scenario(path)
    e = engine(tmp_path, minirom, loaded.scenario.vm)
    async with e:
        assert e.channel is not None
        e.channel._writer.write(b"SPIN\n")
        await asyncio.sleep(0.1)
        res = await StepRunner(loaded, None).run_step(e, 0, loaded.scenario.steps[0])
        assert res.status is Status.TIMEOUT
    log = (tmp_path / "run" / "kvm.log").read_text()
    hung = log.split("hang: step 1: guest.write did not finish within 0.5 s\n")[1]
    state = hung.splitlines()[0]
    found = re.search(r"vCPU 0 thread \d+: state R, .*CPU user ([\d.]+) s system ([\d.]+) s "
                      r"guest ([\d.]+) s; kernel stack: ", state)  # fmt: skip
    assert found, state
    user, system, guest = map(float, found.groups())
    assert system + guest > max(user, 0.05), state  # ~0.6 s spinning, little in Python
    assert "vCPU 0 KVM statistics in 0.2 s: " in hung.splitlines()[1], hung
