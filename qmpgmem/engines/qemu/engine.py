"""QemuEngine: one QEMU process, its QMP monitor and the guest channel, as engine primitives.

Flow: build argv (trace events on via -trace) -> launch paused (-S) -> QMP connect -> ``cont`` ->
wait for the guest's HELLO. Every QMP exchange and event goes to the transcript
(``qmp.jsonl`` in the run directory). Every primitive races the QEMU process: if QEMU exits
meanwhile the primitive raises :class:`VMExitedError` with how it ended (its status, or the
signal that killed it) and its last words; a QMP connection that breaks while QEMU lives is
a :class:`QmpConnectionLost` naming what QEMU sent.

Pause, resume and reset (``vm_stop``/``vm_cont``/``vm_reset``, and the same commands sent as
raw QMP through :meth:`QemuEngine.qmp`): a reset of a running VM waits for the guest's new
HELLO; a reset of a paused VM leaves it paused (QEMU resets it and stays stopped), and the
guest's restart completes on the next ``cont``, which then waits for that HELLO.

The guest channel: over the serial socket, and through the guest's mailbox page
(guest/mailbox.py) where the guest offers it — the page is a memfd of this process that QEMU
maps as the guest area's last page, so requests and replies never cross the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import mmap
import os
import shlex
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecuteError, QMPClient, QMPError, Runstate
from qemu.qmp.qmp_client import ExecInterruptedError

from qmpgmem import fasthash
from qmpgmem.engines.base import (
    Engine,
    GuestJob,
    GuestRange,
    HostHash,
    JobResult,
    RunArtifacts,
    run_guest_jobs,
)
from qmpgmem.engines.layout import Layout, place_regions
from qmpgmem.engines.qemu.argv import (
    BootImage,
    GuestMemfdPlan,
    boot_kind,
    build_argv,
    pvh_firmware,
)
from qmpgmem.engines.qemu.hostmem import QemuRam, parse_ramblocks
from qmpgmem.engines.qemu.process import QemuProcess
from qmpgmem.errors import EngineError, VMExitedError, VMLaunchError
from qmpgmem.guest.channel import MAILBOX_WATCH, GuestChannel
from qmpgmem.guest.mailbox import MBOX_SIZE, Mailbox
from qmpgmem.host.firmware import find_firmware
from qmpgmem.rundir import BackingFile, open_backing_file
from qmpgmem.scenario.model import VmSpec

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a primitive whose socket broke waits for QEMU to exit before it decides that QEMU
#: lives (the socket's EOF and the process's exit arrive separately; the machine may be busy).
_EXIT_GRACE = 1.0


class QmpConnectionLost(EngineError):
    """The QMP connection broke while QEMU still runs (QEMU refused a message, closed it).

    Why its own class: every QMP exchange after it fails the same way, and the launch turns
    it into a :class:`VMLaunchError` like any other QMP failure before the guest ran.
    """


_LIVE: set[QemuProcess] = set()


def kill_all_now() -> None:
    """Last-resort cleanup for signal handlers and atexit: SIGKILL every QEMU still running."""
    for proc in list(_LIVE):
        proc.kill_now()


class QemuEngine(Engine):
    name = "qemu"

    def __init__(
        self,
        vm: VmSpec,
        *,
        qemu_binary: str,
        accel: str,
        boot_image: Path | None,
        run_dir_parent: Path | None = None,
        keep_run_dir: bool = False,
        boot_timeout: float = 30.0,
        gmem_plan: GuestMemfdPlan | None = None,
        trace_events: list[str] | None = None,
        label: str = "qmpgmem",
        qmp_object: bool = False,
    ) -> None:
        self.vm = vm
        self.qemu_binary = qemu_binary
        self.accel = accel
        self.boot_timeout = boot_timeout
        self.gmem_plan = gmem_plan
        self.trace_events = list(trace_events or [])
        self.label = label
        self.qmp_object = qmp_object
        self.layout: Layout = place_regions(vm.memory)
        kind = boot_kind(vm)
        firmware = pvh_firmware(vm, find_firmware(qemu_binary)) if kind == "pvh" else None
        self._boot = BootImage(kind, boot_image, firmware) if boot_image is not None else None
        self.process = QemuProcess(run_dir_parent, keep_run_dir)
        self.qmp_client = QMPClient(label)
        self.channel: GuestChannel | None = None
        self._events: list[dict[str, Any]] = []
        self._event_seen = asyncio.Event()
        self._event_cursor = 0
        self._event_task: asyncio.Task[None] | None = None
        self._transcript = open(self.process.run_dir / "qmp.jsonl", "a", buffering=1)  # noqa: SIM115
        self._t0 = time.monotonic()
        self._pmem_count = 0
        self._ram: QemuRam | None = None  # host_hash's mappings of QEMU's RAM, made on first use
        self._stopped = False
        #: the vCPUs are paused (stop), and a reset while paused waits for the next cont
        self._paused = False
        self._reboot_pending = False
        self._backing: list[BackingFile] = []  # file regions' backing files, opened in start
        #: the mailbox page's memfd and this process's mapping of it (micro guest only)
        self._mbox_fd: int | None = None
        self._mbox_map: mmap.mmap | None = None
        self._mailbox: Mailbox | None = None
        self.ready_after: float | None = None  # seconds from launch to HELLO

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.process.run_dir

    @property
    def artifacts(self) -> RunArtifacts:
        d = self.run_dir
        files = {
            "argv": d / "argv.txt",
            "qemu_output": d / "qemu.log",
            "serial": d / "serial.log",
            "qmp_transcript": d / "qmp.jsonl",
            "trace": d / "qemu-trace.log",
        }
        return RunArtifacts(d, files, shlex.join(self.process.argv))

    def _record(self, kind: str, payload: object) -> None:
        if not self._transcript.closed:
            entry = {"t": round(time.monotonic() - self._t0, 6), kind: payload}
            self._transcript.write(json.dumps(entry, default=str) + "\n")

    def _exited_error(self, doing: str) -> VMExitedError:
        """``QEMU was killed by SIGKILL while <doing>: <its last lines>`` (or its status)."""
        rc = self.process.returncode
        out = self.process.output()
        tail = " | ".join(out.strip().splitlines()[-3:])
        msg = f"{self.process.describe_exit()} while {doing}"
        if tail:
            msg += f": {tail}"
        return VMExitedError(msg, rc, out)

    async def _guard(self, aw: Awaitable[T], doing: str) -> T:
        """Await ``aw`` unless QEMU exits first; then raise VMExitedError.

        A socket that broke under ``aw`` (the guest channel's EOF, a QMP disconnect) usually
        means QEMU is going away: it is reported as QEMU's exit, with its status or signal,
        once the process is reaped. A QMP connection that broke while QEMU lives is a
        :class:`QmpConnectionLost` naming what QEMU sent.
        """
        proc = self.process.proc
        assert proc is not None
        task = asyncio.ensure_future(aw)
        died = asyncio.ensure_future(proc.wait())
        try:
            done, _ = await asyncio.wait({task, died}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            task.cancel()
            raise
        finally:
            died.cancel()
        if task in done:
            exc = task.exception()
            if exc is None:
                return task.result()
            broken_qmp = isinstance(exc, QMPError) and not isinstance(exc, ExecuteError)
            if broken_qmp or isinstance(exc, OSError | EOFError | VMExitedError):
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), _EXIT_GRACE)
                if proc.returncode is not None:
                    raise self._exited_error(doing) from exc
                if broken_qmp:
                    raise await self._qmp_lost(doing, exc) from exc
            raise exc
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise self._exited_error(doing)

    async def _qmp_lost(self, doing: str, exc: BaseException) -> QmpConnectionLost:
        """What broke the QMP connection while QEMU lives, as one sentence.

        A command interrupted by the disconnect only says "Disconnected"; the cause is the
        client's background failure, which ``disconnect()`` re-raises (qemu.qmp's contract).
        """
        cause: BaseException = exc
        if isinstance(exc, ExecInterruptedError | QMPError) and (
            self.qmp_client.runstate is Runstate.DISCONNECTING
        ):
            try:
                await asyncio.wait_for(self.qmp_client.disconnect(), 2.0)
            except Exception as root:  # the reader's or writer's own failure
                cause = root
        what = getattr(cause, "error_message", None) or str(cause) or type(cause).__name__
        received = getattr(cause, "msg", None)  # the message the client could not route
        error = dict(received).get("error") if received is not None else None
        if isinstance(error, dict) and "id" not in dict(received or {}):
            what = (
                f"QEMU's parser refused the message ({error.get('class')}: "
                f"{error.get('desc')}) and answered without a command id, so the QMP client "
                "dropped the connection"
            )
        elif received is not None:
            what += f"; QEMU sent {json.dumps(dict(received), default=str)}"
        self._record("disconnected", what)
        return QmpConnectionLost(
            f"the QMP connection broke while {doing}, and QEMU is still running: {what}"
        )

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        for r in self.vm.memory:  # closed (and, when ours and outside, removed) by stop()
            if r.backend == "file":
                self._backing.append(
                    open_backing_file(
                        self.run_dir, r.id, r.size, path=r.path, existing=r.existing, keep=r.keep
                    )
                )
        mailbox_path = self._open_mailbox()
        argv = build_argv(
            self.vm,
            qemu_binary=self.qemu_binary,
            accel=self.accel,
            layout=self.layout,
            boot=self._boot,
            run_dir=self.run_dir,
            qmp_fd=self.process.qmp_fd,
            serial_fd=self.process.serial_fd,
            gmem=self.gmem_plan,
            name=self.label,
            trace_events=self.trace_events,
            qmp_object=self.qmp_object,
            mem_paths={f.region_id: f.proc_path for f in self._backing},
            mailbox_path=mailbox_path,
        )
        t0 = time.monotonic()
        fds = tuple(f.fd for f in self._backing)
        await self.process.launch(argv, fds if self._mbox_fd is None else (*fds, self._mbox_fd))
        _LIVE.add(self.process)
        phase = "QMP greeting and negotiation"
        try:
            # One budget for the whole start: a monitor that never greets or never answers
            # must not hang the run any more than a guest that never boots.
            async with asyncio.timeout(self.boot_timeout):
                await self._guard(self._connect(), "connecting to QMP")
                if boot_kind(self.vm) == "none":  # no guest: stay paused before the 1st insn
                    self.ready_after = time.monotonic() - t0
                    return
                phase = "answer to QMP cont"
                await self._execute("cont")
                assert self.channel is not None
                phase = "the guest's HELLO"
                await self._guard(self.channel.wait_hello(), "booting")
                if self.vm.vcpus > 1:
                    phase = f"the guest to start its {self.vm.vcpus} vCPUs"
                    await self._guard(self.channel.start_vcpus(self.vm.vcpus), "booting")
        except TimeoutError:
            raise VMLaunchError(
                f"no {phase} within {self.boot_timeout:g} s (timeouts.boot)",
                argv,
                self.process.output(),
            ) from None
        except VMExitedError as exc:
            raise VMLaunchError(str(exc), argv, exc.output) from exc
        except (QMPError, QmpConnectionLost) as exc:  # ConnectError, a malformed greeting
            with contextlib.suppress(TimeoutError):  # let QEMU finish its last words
                await self.process.wait(0.5)
            raise VMLaunchError(
                f"QMP failed while waiting for {phase}: {exc}", argv, self.process.output()
            ) from exc
        self.ready_after = time.monotonic() - t0

    def _open_mailbox(self) -> str | None:
        """A memfd for the guest's mailbox page, mapped here; its path for QEMU (or None).

        Only for the micro guest, and not on a confidential machine, whose backends QEMU
        makes private (guest_memfd): the host could not read the guest's replies there.
        """
        confidential = bool(self.gmem_plan and self.gmem_plan.machine_opts) and any(
            r.backend == "guest_memfd" for r in self.vm.memory
        )
        if boot_kind(self.vm) not in ("rom", "pvh") or confidential:
            return None
        fd = self._mbox_fd = os.memfd_create("qmpgmem-mbox", os.MFD_CLOEXEC)
        os.ftruncate(fd, MBOX_SIZE)
        self._mbox_map = mmap.mmap(fd, MBOX_SIZE)
        self._mailbox = Mailbox(memoryview(self._mbox_map))
        return f"/proc/self/fd/{fd}"

    def _close_mailbox(self) -> None:
        if self._mailbox is not None:
            self._mailbox.release()
            self._mailbox = None
        if self._mbox_map is not None:
            with contextlib.suppress(BufferError):  # a view still exported: leave it to GC
                self._mbox_map.close()
            self._mbox_map = None
        if self._mbox_fd is not None:
            os.close(self._mbox_fd)
            self._mbox_fd = None

    async def _connect(self) -> None:
        await self.qmp_client.connect(self.process.qmp_sock)
        greeting = self.qmp_client.greeting
        self._record("greeting", dict(greeting._raw) if greeting is not None else None)
        self._event_task = asyncio.create_task(self._collect_events())
        reader, writer = await asyncio.open_unix_connection(sock=self.process.serial_sock)
        self.channel = GuestChannel(
            reader,
            writer,
            self.run_dir / "serial.log",
            on_eof=lambda: self._exited_error("talking to the guest"),
        )
        # a short watch for replies under KVM, where the doorbell is an exit (MAILBOX_WATCH)
        self.channel.attach_mailbox(
            self._mailbox, watch=MAILBOX_WATCH if self.accel == "kvm" else 0
        )

    async def _collect_events(self) -> None:
        listener = EventListener()
        with self.qmp_client.listen(listener):
            async for event in listener:
                raw = dict(event)
                self._record("event", raw)
                self._events.append(raw)
                self._event_seen.set()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        try:
            proc = self.process.proc
            if (
                proc is not None
                and proc.returncode is None
                and self.qmp_client.runstate is Runstate.RUNNING
            ):  # a polite quit only where QMP works; else process.close() signals it
                with contextlib.suppress(QMPError, OSError, TimeoutError, EngineError):
                    await asyncio.wait_for(self._execute("quit"), 2.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proc.wait()), 2.0)
        finally:
            if self._event_task is not None:
                self._event_task.cancel()
                with contextlib.suppress(BaseException):
                    await self._event_task
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.qmp_client.disconnect(), 2.0)
            if self.channel is not None:
                self.channel.close()
            self._transcript.close()
            await self.process.close()
            _LIVE.discard(self.process)
            if self._ram is not None:  # host_hash's mappings keep QEMU's memory alive
                self._ram.close()
            for backing in self._backing:
                backing.close()
            self._close_mailbox()

    # -- QMP --------------------------------------------------------------------------------
    async def _execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        self._record("sent", {"execute": command, "arguments": arguments or {}})
        try:
            ret = await self._guard(
                self.qmp_client.execute(command, arguments or None), f"running QMP {command}"
            )
        except ExecuteError as exc:
            self._record("received", {"error": dict(exc.error.error._raw)})
            raise
        self._record("received", {"return": ret})
        return ret

    async def qmp(self, command: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """A raw QMP command; ``stop``, ``cont`` and ``system_reset`` that succeed have the
        lifecycle primitives' effect (a reset waits for the guest's new HELLO, or for the next
        ``cont`` when paused), so the guest steps after them find the guest as they would
        after ``vm.stop``/``vm.cont``/``vm.reset``."""
        if command == "system_reset" and self.channel is not None:
            self.channel.reset_hello()
        try:
            ret = await self._execute(command, arguments)
        except ExecuteError as exc:
            return {"error": {"class": exc.error_class, "desc": exc.error.error.desc}}
        if command == "stop":
            self._paused = True
        elif command == "cont":
            await self._after_cont()
        elif command == "system_reset":
            await self._after_reset()
        return {"return": ret}

    async def wait_event(self, name: str, data: dict[str, Any], timeout: float) -> dict[str, Any]:
        """The first event named ``name`` whose data contains ``data``, since the last match."""
        from qmpgmem.report.match import subset_mismatch

        deadline = time.monotonic() + timeout
        while True:
            while self._event_cursor < len(self._events):
                ev = self._events[self._event_cursor]
                self._event_cursor += 1
                if ev.get("event") == name and subset_mismatch(data, ev.get("data", {})) is None:
                    return ev
            self._event_seen.clear()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {name} event within {timeout:g} s")
            with contextlib.suppress(TimeoutError):
                await self._guard(
                    asyncio.wait_for(self._event_seen.wait(), remaining), f"waiting for {name}"
                )

    # -- primitives -------------------------------------------------------------------------
    def resolve(self, region: str, offset: int, size: int) -> GuestRange:
        return self.layout.resolve(region, offset, size)

    def _ch(self) -> GuestChannel:
        if self.channel is None:
            raise EngineError("the guest channel is not open")
        return self.channel

    async def guest_write(self, rng: GuestRange, seed: int) -> None:
        await self._guard(self._ch().write(rng.gpa, rng.size, seed, rng.offset), "guest.write")

    async def guest_hash(self, rng: GuestRange) -> int:
        return await self._guard(self._ch().hash(rng.gpa, rng.size), "guest.verify")

    async def guest_convert(self, rng: GuestRange, private: bool) -> int:
        return await self._guard(self._ch().convert(rng.gpa, rng.size, private), "guest.convert")

    async def guest_jobs(self, jobs: list[GuestJob]) -> list[JobResult]:
        return await self._guard(run_guest_jobs(self._ch(), jobs), "guest jobs")

    async def host_read(self, rng: GuestRange) -> bytes:
        self._pmem_count += 1
        path = self.run_dir / f"pmemsave-{self._pmem_count}.bin"
        await self._execute("pmemsave", {"val": rng.gpa, "size": rng.size, "filename": str(path)})
        try:
            return await asyncio.to_thread(Path(path).read_bytes)
        finally:
            path.unlink(missing_ok=True)

    async def host_hash(self, rng: GuestRange) -> HostHash:
        """The region's RAM block hashed in place where it can be mapped (engines/qemu/
        hostmem.py), else ``pmemsave``; the result names the path."""
        proc = self.process.proc
        if proc is not None and proc.returncode is None:
            try:
                reply = await self._execute("x-query-ramblock")
            except ExecuteError:  # a QEMU without it: pmemsave
                reply = None
            text = reply.get("human-readable-text", "") if isinstance(reply, dict) else ""
            ram = self._ram
            if ram is None or ram.pid != proc.pid:
                ram = self._ram = QemuRam(proc.pid, (f.fd for f in self._backing))
            args = (parse_ramblocks(text), rng.region, rng.offset, rng.size)
            try:
                hit = await asyncio.to_thread(ram.hash, *args)
            except OSError as exc:
                log.warning("reading %s in place failed, using pmemsave: %s", rng.region, exc)
                hit = None
            if hit is not None:
                return HostHash(hit.value, hit.via)
        data = await self.host_read(rng)
        return HostHash(await asyncio.to_thread(fasthash.hash_buffer, data), "pmemsave")

    async def sleep(self, seconds: float) -> None:
        await self._guard(asyncio.sleep(seconds), "sleeping")

    async def vm_stop(self) -> None:
        await self._execute("stop")
        self._paused = True

    async def vm_cont(self) -> None:
        """cont; after a reset of the paused VM, also wait until the guest has booted."""
        await self._execute("cont")
        await self._after_cont()

    async def vm_reset(self) -> None:
        """system_reset, then wait until the guest has booted again; a paused VM stays
        paused (QEMU resets it without running it) and boots on the next ``vm_cont``."""
        self._ch().reset_hello()
        await self._execute("system_reset")
        await self._after_reset()

    async def _after_cont(self) -> None:
        self._paused = False
        if self._reboot_pending:
            await self._wait_boot()

    async def _after_reset(self) -> None:
        if self._paused:
            self._reboot_pending = True
        else:
            await self._wait_boot()

    async def _wait_boot(self) -> None:
        """The guest's HELLO after a reset, then its APs again (the reset put them back into
        wait-for-SIPI)."""
        self._reboot_pending = False
        if boot_kind(self.vm) == "none":  # no guest to wait for
            return
        ch = self._ch()
        await self._guard(asyncio.wait_for(ch.wait_hello(), self.boot_timeout), "rebooting")
        if self.vm.vcpus > 1:
            await self._guard(
                asyncio.wait_for(ch.start_vcpus(self.vm.vcpus), self.boot_timeout), "rebooting"
            )
