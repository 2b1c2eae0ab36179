"""KvmEngine: the micro guest on a VM this process builds itself from KVM ioctls.

Why a second engine next to QEMU: it can do what QEMU cannot — put any scenario region on a
guest_memfd of a plain VM, punch holes in it or allocate it from the host, read and write it
through the file's own mapping — and it shows what the kernel does without a VMM in between.

The VM: ``vm.vcpus`` vCPUs, each with its own worker thread; vCPU 0 at the micro guest ROM's
64-bit CPL3 entry (:mod:`.guest_entry`; ``guest.boot: rom``, and every reset, from its reset
vector instead: the image QEMU's microvm runs), the others once the guest starts
them with INIT/SIPI (:mod:`.smp`), the guest's sys area as anonymous memory at GPA 0, the
scenario regions after it (:mod:`.memory`), COM1 and isa-debug-exit emulated in the vCPU
threads (:mod:`.vcpu_thread`), the guest channel over that COM1
(:class:`~qmpgmem.guest.channel.GuestChannel`).

Conversions: KVM_HC_MAP_GPA_RANGE exits are enabled wherever KVM offers them and handled by
:mod:`.conversion`. On a backend where the hypercall never returns (kvm_pvm) ``guest_convert``
is refused before the guest is asked.

The guest channel: over the emulated COM1, and through the guest's mailbox page
(guest/mailbox.py), which lies in the sys area this process maps anyway.

Idle: the guest's idle ``hlt`` (its RIP from the ROM header, :mod:`qmpgmem.guest.rom_header`)
is a wait for the next request in the vCPU thread, not the end of the VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import json
import logging
import time
from pathlib import Path
from typing import Final

from qmpgmem.engines.base import (
    Engine,
    GuestJob,
    GuestRange,
    HostHash,
    JobResult,
    RunArtifacts,
    run_guest_jobs,
)
from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.backend import HYPERCALL_NEVER_RETURNS, kvm_backend
from qmpgmem.engines.kvm.conversion import Conversions
from qmpgmem.engines.kvm.cpuid import vcpu_cpuid
from qmpgmem.engines.kvm.guest_entry import RomBoot
from qmpgmem.engines.kvm.host_access import HostAccess
from qmpgmem.engines.kvm.memory import GuestMemory
from qmpgmem.engines.kvm.objects import Kvm, Vcpu, Vm
from qmpgmem.engines.kvm.serial import Uart16550
from qmpgmem.engines.kvm.smp import ApThreads, LocalApics
from qmpgmem.engines.kvm.stats import VcpuStats, changes
from qmpgmem.engines.kvm.uart_channel import open_uart_channel
from qmpgmem.engines.kvm.vcpu_thread import EndReason, VcpuEnd, VcpuRunner, install_kick_signal
from qmpgmem.engines.layout import place_regions
from qmpgmem.errors import (
    EngineError,
    SetupError,
    UnsupportedStep,
    VMExitedError,
    VMLaunchError,
)
from qmpgmem.guest.channel import GuestChannel
from qmpgmem.guest.mailbox import (
    HOST_NO_IOAPIC,
    HOST_UART_READY,
    MBOX_GPA,
    MBOX_SIZE,
    Mailbox,
)
from qmpgmem.guest.protocol import Hello
from qmpgmem.rundir import make_run_dir
from qmpgmem.scenario.model import VmSpec

log = logging.getLogger(__name__)

VM_TYPES: Final = {
    "default": abi.VmType.DEFAULT,
    "sw-protected": abi.VmType.SW_PROTECTED,
    "sev": abi.VmType.SEV,
    "sev-es": abi.VmType.SEV_ES,
    "sev-snp": abi.VmType.SNP,
    "tdx": abi.VmType.TDX,
}
#: VM types whose launch needs a firmware/attestation flow this engine does not implement.
NEEDS_LAUNCH_FLOW: Final = frozenset({"sev", "sev-es", "sev-snp", "tdx"})

#: Where QEMU puts the VMX real-mode TSS (needed by kvm_intel without unrestricted guest).
TSS_ADDR: Final = 0xFFFBD000
#: How long stop() waits for the host's reads, hashes and writes under way (host_access.py)
#: before it leaves the memory mapped instead: hashes and writes give up after one chunk.
HOST_DRAIN_TIMEOUT: Final = 30.0
#: How long a hung step's note watches KVM's counters of each vCPU.
HANG_SAMPLE: Final = 0.2


@functools.cache
def _supported_cpuid() -> ctypes.Array[abi.kvm_cpuid_entry2]:
    with Kvm() as kvm:
        return vcpu_cpuid(kvm.supported_cpuid())


class KvmEngine(Engine):
    """One direct-KVM VM running the micro guest. ``async with KvmEngine(...) as e:``."""

    name = "kvm"

    def __init__(
        self,
        vm: VmSpec,
        *,
        boot_timeout: float,
        step_timeout: float,
        run_dir: Path | None = None,
        run_dir_parent: Path | None = None,
        rom: bytes | Path | None = None,
        backend: str | None = None,
    ) -> None:
        """Without ``run_dir`` a private (0700) one is made under ``run_dir_parent``.

        ``rom`` overrides the micro guest image (tests); ``backend`` the /sys/module probe.
        """
        self.spec = vm
        if run_dir is None:
            run_dir = make_run_dir("kvm", run_dir_parent)
        self._run_dir = Path(run_dir)
        self.layout = place_regions(vm.memory)
        self._boot_timeout = boot_timeout
        self._step_timeout = step_timeout
        self._rom = rom
        self.backend = backend or kvm_backend()
        self._artifacts = RunArtifacts(self._run_dir)
        self._stack = contextlib.ExitStack()
        self._kvm: Kvm | None = None
        self._vm: Vm | None = None
        self._vcpu: Vcpu | None = None
        #: vCPUs 1..n-1, started by the guest's SIPI
        self._aps = ApThreads(self._make_runner, self._event)
        self._apics = LocalApics(vm.vcpus, self._aps.on_sipi)
        self._memory: GuestMemory | None = None
        self._uart: Uart16550 | None = None
        self._runner: VcpuRunner | None = None
        #: each vCPU's statistics file (by vCPU fd), opened before its first KVM_RUN
        self._vcpu_stats: dict[int, VcpuStats] = {}
        self.channel: GuestChannel | None = None
        self._reader: asyncio.StreamReader | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._initial: tuple[abi.kvm_regs, abi.kvm_sregs] | None = None
        self._conversions: Conversions | None = None
        self._host: HostAccess | None = None  # the host.* steps' side of the memory
        self._idle_rip: int | None = None
        self._mailbox: Mailbox | None = None  # a view of the sys mapping, dropped in stop()
        self._boot: RomBoot | None = None  # what of the ROM is mapped, where vCPU 0 starts
        self._hypercall_exit = False
        self._events: list[str] = []
        self._t0 = time.monotonic()
        self.hello: Hello | None = None
        #: seconds from start() to the guest's HELLO (named as on the QEMU engine)
        self.ready_after: float | None = None
        self.end: VcpuEnd | None = None
        #: set (in the loop) when the guest ended the VM: exit, halt, triple fault, failure
        self._ended = asyncio.Event()
        self._stopped = False
        #: the vCPUs are held (vm_stop); a reset while held boots on the next vm_cont
        self._paused = False
        self._reboot_pending = False

    # -- lifecycle -----------------------------------------------------------------------------
    def _event(self, text: str) -> None:
        self._events.append(f"{time.monotonic() - self._t0:10.6f} {text}")

    def _check_spec(self) -> abi.VmType:
        spec = self.spec
        if spec.guest.kernel is not None or spec.guest.image is None:
            raise UnsupportedStep("the direct KVM engine runs only the built-in micro guest")
        if spec.guest.boot == "pvh":
            raise UnsupportedStep("the direct KVM engine boots the micro guest ROM, not PVH")
        if spec.accel == "tcg":
            raise UnsupportedStep("accel tcg asks for an emulator; the KVM engine is KVM only")
        if spec.vm_type in NEEDS_LAUNCH_FLOW:
            raise UnsupportedStep(
                f"VM type {spec.vm_type} needs a confidential launch flow "
                "(firmware, measurement) that the direct KVM engine does not implement"
            )
        return VM_TYPES[spec.vm_type]

    def _rom_image(self) -> bytes:
        if isinstance(self._rom, bytes):
            return self._rom
        if isinstance(self._rom, Path):
            return self._rom.read_bytes()
        try:
            from qmpgmem.guest.image import guest_image  # the micro guest's builder
        except ImportError as exc:
            raise SetupError(f"the micro guest image module is missing: {exc}") from exc
        return guest_image("rom").read_bytes()

    async def start(self) -> None:
        if self.channel is not None:
            raise EngineError("KvmEngine.start() called twice")
        t0 = time.perf_counter()
        self._t0 = time.monotonic()
        self._run_dir.mkdir(parents=True, exist_ok=True)
        self._loop = asyncio.get_running_loop()
        vm_type = self._check_spec()
        rom = self._rom_image()
        self._event("ROM image read")
        try:
            self._build(vm_type, rom)
        except (UnsupportedStep, SetupError):
            await self.stop()
            raise
        except OSError as exc:
            await self.stop()
            raise VMLaunchError(f"KVM refused to build the VM: {exc}") from exc
        try:
            assert self.channel is not None
            async with asyncio.timeout(self._boot_timeout):
                self.hello = await self.channel.wait_hello()
        except VMExitedError as exc:
            await self.stop()
            raise VMLaunchError(
                f"the micro guest stopped before HELLO: {exc}", output=exc.output
            ) from exc
        except TimeoutError:
            await self.stop()
            raise VMLaunchError(
                f"the micro guest did not say HELLO within {self._boot_timeout:g} s "
                f"(KVM backend {self.backend}, {self._exit_count()} exits)",
                output=self._serial_tail(),
            ) from None
        except BaseException:
            await self.stop()
            raise
        await self._start_aps()
        self.ready_after = time.perf_counter() - t0
        self._event(f"HELLO after {self.ready_after * 1e3:.2f} ms: {self.hello}")

    def _build(self, vm_type: abi.VmType, rom: bytes) -> None:
        kvm = self._kvm = self._stack.enter_context(Kvm())
        offered = kvm.check_extension(abi.Cap.VM_TYPES)
        if vm_type != abi.VmType.DEFAULT and not offered & (1 << vm_type):
            raise UnsupportedStep(
                f"KVM (backend {self.backend}) does not offer VM type {self.spec.vm_type}: "
                f"KVM_CAP_VM_TYPES is {offered:#x}, bit {int(vm_type)} is clear"
            )
        vm = self._vm = self._stack.enter_context(kvm.create_vm(vm_type))
        self._event(f"KVM_CREATE_VM type {int(vm_type)} ({self.spec.vm_type})")
        if self.backend == "kvm_intel":
            with contextlib.suppress(OSError):
                vm.set_tss_addr(TSS_ADDR)
        # KVM_CAP_MEMORY_ATTRIBUTES on the VM fd lists the attributes this VM type supports
        private_mem = bool(
            vm.check_extension(abi.Cap.MEMORY_ATTRIBUTES) & abi.KVM_MEMORY_ATTRIBUTE_PRIVATE
        )
        hc_bit = 1 << abi.KVM_HC_MAP_GPA_RANGE
        if vm.check_extension(abi.Cap.EXIT_HYPERCALL) & hc_bit:
            vm.enable_cap(abi.Cap.EXIT_HYPERCALL, hc_bit)
            self._hypercall_exit = True
        self._event(
            f"private memory {'yes' if private_mem else 'no'}, "
            f"KVM_HC_MAP_GPA_RANGE exit {'on' if self._hypercall_exit else 'not offered'}"
        )
        memory = self._memory = GuestMemory(vm, file_dir=self._run_dir)
        self._stack.callback(memory.close)
        self._conversions = Conversions(vm, memory, private_mem, self._event)
        self._host = HostAccess(memory, private_mem, self._event)
        plan = self._boot = RomBoot.of(rom, self.spec.guest.boot)
        header = plan.header
        self._idle_rip = (header.idle_rip or None) if header is not None else None
        memory.add_sys(rom_alias=plan.alias)
        for placed_region in self.layout.regions:
            memory.add_region(self.spec.region(placed_region.id), placed_region.gpa)
        if not plan.preload:  # else at the first reset (guest_entry.RomBoot)
            plan.map_rom(memory)
        for placed in memory.regions:
            self._event(
                f"region {placed.region.id} {placed.region.backend} at GPA {placed.gpa:#x} "
                f"size {placed.size:#x} slot {placed.slot}"
                + (f" gmem flags {placed.gmem.flags:#x}" if placed.gmem else "")
            )
        self._event(f"memory: {memory.slots} memslots")
        for index in range(self.spec.vcpus):  # closed by vm.close()
            vcpu = vm.create_vcpu(index)
            vcpu.set_cpuid(_supported_cpuid())
            if index:
                self._aps.add(vcpu)
            else:
                self._vcpu = vcpu
        assert self._vcpu is not None and memory.sys is not None
        self._initial = (self._vcpu.get_regs(), self._vcpu.get_sregs())  # for vm_reset
        if plan.at_cpl3:
            self._event(plan.enter(self._vcpu, memory.sys))
        if self.spec.vcpus > 1:
            self._event(f"{self.spec.vcpus} vCPUs; the APs wait for the guest's SIPI")

        install_kick_signal()
        self._uart = Uart16550(self._on_output)
        self._open_channel()
        self._event("vCPUs set up")
        self._start_runner()
        self._event("vCPU 0 thread started")

    def _open_channel(self) -> None:
        assert self._loop is not None and self._uart is not None
        if self.channel is not None:
            self.channel.close()
        serial_log = self._run_dir / "serial.log"
        self._artifacts.files["serial"] = serial_log
        self.channel, self._reader = open_uart_channel(
            self._uart, self._loop, serial_log, self._eof_error
        )
        if self._mailbox is None and self._memory is not None and self._memory.sys is not None:
            page = (ctypes.c_ubyte * MBOX_SIZE).from_address(self._memory.sys.addr + MBOX_GPA)
            self._mailbox = Mailbox(memoryview(page).cast("B"))
        # the HELLO through the page (one exit, not ~60), a short watch for replies (the
        # vCPU thread then makes no exit for them and this thread needs no wake-up), and this
        # VMM's devices need no IOAPIC routing and no UART programming
        self.channel.attach_mailbox(self._mailbox, host_flags=HOST_NO_IOAPIC | HOST_UART_READY)

    def _make_runner(self, vcpu: Vcpu) -> VcpuRunner:
        assert self._uart is not None
        # KVM_GET_STATS_FD takes the vCPU's lock, which KVM_RUN holds: open it before any run
        if vcpu.fd not in self._vcpu_stats:
            with contextlib.suppress(OSError):  # KVM before 5.14 has no statistics files
                stats = self._vcpu_stats[vcpu.fd] = VcpuStats(vcpu.fd)
                self._stack.callback(stats.close)
        return VcpuRunner(
            vcpu, self._uart, self._on_hypercall, self._on_end, self._apics.mmio, self._idle_rip
        )

    def _start_runner(self, paused: bool = False) -> None:
        """vCPU 0 from its current registers; ``paused``: held before its first KVM_RUN."""
        assert self._vcpu is not None
        self.end = None
        self._ended.clear()
        self._runner = self._make_runner(self._vcpu)
        self._runner.start(paused=paused)

    async def _start_aps(self) -> None:
        """After HELLO: the guest starts vCPUs 1..n-1 (SMP), each answering its APIC ID."""
        if self.spec.vcpus == 1:
            return
        assert self.channel is not None
        try:
            async with asyncio.timeout(self._boot_timeout):
                apics = await self.channel.start_vcpus(self.spec.vcpus)
        except BaseException:
            await self.stop()
            raise
        self._event(f"vCPUs up, APIC IDs {apics}")

    def _all_runners(self) -> list[VcpuRunner]:
        return [r for r in (self._runner, *self._aps.runners) if r is not None]

    # -- called from the vCPU thread -----------------------------------------------------------
    def _call_in_loop(self, fn: object, *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]

    def _on_output(self, data: bytes) -> None:
        reader = self._reader
        if reader is not None:
            self._call_in_loop(reader.feed_data, data)

    def _on_end(self, end: VcpuEnd) -> None:
        if self.end is not None and end.reason == EndReason.STOPPED:
            return  # an AP stopping after the VM already ended
        self.end = end
        self._event(f"vCPU ended: {end.reason} {end.detail}")
        if end.reason != EndReason.STOPPED:
            self._call_in_loop(self._ended.set)
        reader = self._reader
        if reader is not None:
            self._call_in_loop(reader.feed_eof)

    def _on_hypercall(self, hc: abi._kvm_run_hypercall) -> None:
        assert self._conversions is not None
        self._conversions.on_hypercall(hc)

    # -- stop ----------------------------------------------------------------------------------
    def _eof_error(self) -> Exception:
        end = self.end
        if end is None:
            return VMExitedError("the guest channel closed", output=self._serial_tail())
        if end.reason == EndReason.DEBUG_EXIT:
            return VMExitedError(
                f"the guest exited through isa-debug-exit ({end.detail})",
                returncode=end.exit_status,
                output=self._serial_tail(),
            )
        return VMExitedError(
            f"the vCPU stopped: {end.reason} ({end.detail})", output=self._serial_tail()
        )

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._aps.closed = True  # no SIPI starts a thread from here on
        host = self._host
        if host is not None and not await asyncio.to_thread(host.close, HOST_DRAIN_TIMEOUT):
            # A host access still runs over the mappings (a read is not chunked): leave
            # the memory to it rather than unmap it under the thread.
            log.error("a host access did not end; leaking the VM's memory to stay memory-safe")
            self._event(f"{host.in_flight} host access(es) still running; VM left open")
            self._stack.pop_all()
        if not await asyncio.to_thread(self._stop_all):
            # The thread still uses the vCPU mapping: leave the VM to it rather than unmap
            # memory under a running KVM_RUN.
            log.error("the vCPU thread did not stop; leaking its VM to stay memory-safe")
            self._event("vCPU thread did not stop; VM left open")
            self._stack.pop_all()
        if self.channel is not None:
            self.channel.close()
        if self._mailbox is not None:
            self._mailbox.release()
            self._mailbox = None
        try:
            self._stack.close()
        finally:
            self._vcpu = self._vm = self._kvm = None
            self._memory = self._host = None
            self._write_log()

    async def note_hang(self, what: str) -> None:
        """The kernel's view of each vCPU into kvm.log: its thread (a hung guest spins, "R";
        one that waits for input sleeps) and what KVM counted for it over HANG_SAMPLE
        seconds: exits and page faults of a guest that runs, or of a fault retried."""
        self._event(f"hang: {what}")
        readers = []
        for runner in self._all_runners():
            self._event(f"  {runner.kernel_state()}")
            stats = self._vcpu_stats.get(runner.vcpu_fd)
            if runner.running and stats is not None:
                readers.append((runner.name, stats, stats.read()))
        await asyncio.sleep(HANG_SAMPLE)
        for name, stats, before in readers:
            moved = changes(before, stats.read())
            counts = ", ".join(f"{k} +{v}" for k, v in sorted(moved.items())) or "nothing"
            self._event(f"  {name} KVM statistics in {HANG_SAMPLE:g} s: {counts}")

    def _stop_all(self) -> bool:
        """Stop every vCPU thread; True when all ended."""
        return all([runner.stop() for runner in self._all_runners()])

    def _write_log(self) -> None:
        try:
            self._run_dir.mkdir(parents=True, exist_ok=True)
            path = self._run_dir / "kvm.log"
            lines = [
                f"backend {self.backend}",
                f"vm {json.dumps(self.spec.model_dump(mode='json'))}",
                *self._events,
            ]
            for runner in self._all_runners():
                lines.append(
                    f"{runner.name}: exits {runner.exits} mmio {runner.mmio_exits} "
                    f"idle halts {runner.idle_halts}"
                )
            path.write_text("\n".join(lines) + "\n")
            self._artifacts.files["kvm"] = path
        except OSError:
            log.exception("could not write the KVM engine log")

    def _exit_count(self) -> int:
        return sum(runner.exits for runner in self._all_runners())

    def _serial_tail(self) -> str:
        path = self._artifacts.files.get("serial")
        if path is None or not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-10:])

    @property
    def artifacts(self) -> RunArtifacts:
        return self._artifacts

    # -- resolving ranges ----------------------------------------------------------------------
    def resolve(self, region: str, offset: int, size: int) -> GuestRange:
        """The shared layout (engines/layout.py): the same GPA as under the QEMU engine."""
        return self.layout.resolve(region, offset, size)

    # -- guest side ----------------------------------------------------------------------------
    def _guest(self) -> GuestChannel:
        if self.channel is None or self._stopped:
            raise EngineError("the VM is not running")
        return self.channel

    async def guest_write(self, rng: GuestRange, seed: int) -> None:
        async with asyncio.timeout(self._step_timeout):
            await self._guest().write(rng.gpa, rng.size, seed, rng.offset)

    async def guest_hash(self, rng: GuestRange) -> int:
        async with asyncio.timeout(self._step_timeout):
            return await self._guest().hash(rng.gpa, rng.size)

    def _refuse_hypercall_that_never_returns(self) -> None:
        if self.backend in HYPERCALL_NEVER_RETURNS:
            raise UnsupportedStep(
                f"KVM backend {self.backend}: a guest vmcall/vmmcall never returns on this "
                "host, so the guest is not sent into KVM_HC_MAP_GPA_RANGE"
            )

    async def guest_convert(self, rng: GuestRange, private: bool) -> int:
        self._refuse_hypercall_that_never_returns()
        async with asyncio.timeout(self._step_timeout):
            return await self._guest().convert(rng.gpa, rng.size, private)

    async def guest_jobs(self, jobs: list[GuestJob]) -> list[JobResult]:
        if any(job.kind == "convert" for job in jobs):
            self._refuse_hypercall_that_never_returns()
        async with asyncio.timeout(self._step_timeout):
            return await run_guest_jobs(self._guest(), jobs)

    # -- host side (host_access.py) -------------------------------------------------------------
    def _host_access(self) -> HostAccess:
        if self._host is None:
            raise EngineError("the VM is not running")
        return self._host

    async def host_read(self, rng: GuestRange) -> bytes:
        return await self._host_access().read(rng)

    async def host_hash(self, rng: GuestRange) -> HostHash:
        return await self._host_access().hash(rng)

    async def host_write(self, rng: GuestRange, data: bytes) -> None:
        await self._host_access().write(rng, data)

    async def gmem_punch_hole(self, rng: GuestRange) -> None:
        await self._host_access().punch_hole(rng)

    async def gmem_allocate(self, rng: GuestRange) -> None:
        await self._host_access().allocate(rng)

    # -- VM lifecycle --------------------------------------------------------------------------
    async def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass; a guest that ends the VM meanwhile raises at once."""
        self._guest()
        try:
            await asyncio.wait_for(self._ended.wait(), seconds)
        except TimeoutError:
            return
        raise self._eof_error()

    async def vm_stop(self) -> None:
        self._running_runner()
        for runner in self._all_runners():
            if not await asyncio.to_thread(runner.pause):
                raise EngineError(f"{runner.name} did not pause")
        self._paused = True
        self._event("paused")

    async def vm_cont(self) -> None:
        """Resume the vCPUs; after a reset of the paused VM, wait until the guest booted."""
        self._running_runner()
        for runner in self._all_runners():
            runner.resume()
        self._paused = False
        self._event("resumed")
        if self._reboot_pending:
            await self._wait_boot()

    async def vm_reset(self) -> None:
        """Put the vCPU back at the reset vector (memory stays) and wait for the new HELLO.

        A paused VM stays paused, as QEMU's does: vCPU 0 is held at the reset vector and the
        guest boots (HELLO, its APs) on the next :meth:`vm_cont`.
        """
        if self._vcpu is None or self._initial is None or self._uart is None:
            raise EngineError("the VM is not running")
        if not await asyncio.to_thread(self._stop_all):
            raise EngineError("the vCPUs did not stop for the reset")
        self._aps.forget()  # the APs wait for a SIPI again (their state is set then)
        if self._memory is not None and self._memory.rom is None and self._boot is not None:
            self._boot.map_rom(self._memory)  # the reset vector's
            self._event("ROM mapped for the reset vector")
        regs, sregs = self._initial
        self._vcpu.set_sregs(sregs)
        self._vcpu.set_regs(regs)
        self._uart.reset()
        self._open_channel()
        self.hello = None
        self._event("reset" + (" (paused: boots on cont)" if self._paused else ""))
        self._start_runner(paused=self._paused)
        if self._paused:
            self._reboot_pending = True
        else:
            await self._wait_boot()

    async def _wait_boot(self) -> None:
        """The guest's HELLO after a reset, then its APs again."""
        assert self.channel is not None
        self._reboot_pending = False
        async with asyncio.timeout(self._boot_timeout):
            self.hello = await self.channel.wait_hello()
            if self.spec.vcpus > 1:
                await self.channel.start_vcpus(self.spec.vcpus)

    def _running_runner(self) -> VcpuRunner:
        if self._runner is None or not self._runner.running:
            raise EngineError("the vCPU is not running")
        return self._runner
