"""Boot the micro guest in a real QEMU for the guest's own tests.

The command line follows the layout the engines use: the guest's 4 MiB ``sys`` area as the
first NUMA node (GPA 0) and one scenario region as the second (GPA 4 MiB), COM1 and QMP on
socketpairs (connected before QEMU starts, so no line is lost and no path is left behind).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from qemu.qmp import QMPClient

from qmpgmem.guest.image import guest_image
from qmpgmem.guest.protocol import SYS_SIZE, Hello

from .serial import GuestSerial

MiB = 1 << 20
REGION_GPA = SYS_SIZE


@dataclass(frozen=True)
class Boot:
    """How to start the guest."""

    kind: Literal["rom", "pvh"] = "rom"
    accel: Literal["kvm", "tcg"] = "kvm"
    machine: str = "microvm"
    region_size: int = 16 * MiB
    no_reboot: bool = True  # -no-reboot also turns QMP system_reset into an exit
    firmware: str | None = None  # -bios for a "pvh" boot; None: the machine's default


def qemu_argv(qemu: str, image: Path, boot: Boot, serial_fd: int, qmp_fd: int) -> list[str]:
    mem_mib = (SYS_SIZE + boot.region_size) // MiB
    argv = [
        qemu,
        "-machine", boot.machine,
        "-accel", boot.accel,
        "-nodefaults", "-display", "none",
        "-m", f"{mem_mib}M",
        "-numa", "node,memdev=sys",
        "-numa", "node,memdev=m0",
        "-object", f"memory-backend-ram,id=sys,size={SYS_SIZE // MiB}M",
        "-object", f"memory-backend-memfd,id=m0,size={boot.region_size // MiB}M",
        "-chardev", f"socket,id=ch,fd={serial_fd}",
        "-serial", "chardev:ch",
        "-chardev", f"socket,id=qmp,fd={qmp_fd}",
        "-mon", "chardev=qmp,mode=control",
        "-device", "isa-debug-exit,iobase=0xf4,iosize=4",
    ]  # fmt: skip
    argv += ["-no-reboot"] if boot.no_reboot else []
    if boot.kind == "rom":
        argv += ["-bios", str(image)]
    else:
        argv += (["-bios", boot.firmware] if boot.firmware else []) + ["-kernel", str(image)]
    return argv


@dataclass
class GuestVM:
    """A running QEMU with the guest past HELLO."""

    proc: asyncio.subprocess.Process
    serial: GuestSerial
    qmp: QMPClient
    argv: list[str]
    log: Path
    hello: Hello | None = None
    boot_seconds: float = 0.0  # process start -> HELLO received
    _socks: list[socket.socket] = field(default_factory=list)

    async def request(self, line: str | bytes, timeout: float = 30.0) -> str:
        return await self.serial.request(line, timeout)

    async def execute(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        return await self.qmp.execute(cmd, args)

    async def wait(self, timeout: float = 10.0) -> int:
        async with asyncio.timeout(timeout):
            return await self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.qmp.disconnect()
        await self.serial.close()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        for sock in self._socks:
            sock.close()


@contextlib.asynccontextmanager
async def running_guest(
    qemu: str, workdir: Path, boot: Boot = Boot(), hello_timeout: float = 15.0
) -> AsyncIterator[GuestVM]:
    """Start QEMU, wait for HELLO, yield; the process is always gone afterwards."""
    image = guest_image(boot.kind)
    ser_host, ser_qemu = socket.socketpair()
    qmp_host, qmp_qemu = socket.socketpair()
    argv = qemu_argv(qemu, image, boot, ser_qemu.fileno(), qmp_qemu.fileno())
    log = workdir / f"qemu-{boot.kind}-{boot.accel}-{boot.machine}.log"
    with log.open("wb") as log_file:
        t0 = time.perf_counter()
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(ser_qemu.fileno(), qmp_qemu.fileno()),
            start_new_session=True,
        )
    ser_qemu.close()
    qmp_qemu.close()
    vm = GuestVM(proc, await GuestSerial.over(ser_host), QMPClient("guest-test"), argv, log)
    vm._socks = [ser_host, qmp_host]
    try:
        try:
            vm.hello = await vm.serial.hello(hello_timeout)
        except (TimeoutError, EOFError) as exc:
            raise AssertionError(
                f"no HELLO: {exc!r}; serial: {vm.serial.lines}; QEMU: {vm.output()}"
            ) from exc
        vm.boot_seconds = time.perf_counter() - t0
        await vm.qmp.connect(qmp_host)
        yield vm
    finally:
        await vm.close()
