"""Where a firmware boot's time goes: the firmware's debug lines timed by the host, and the
vCPU's instruction pointer sampled over QMP, beside the same boot under TCG.

Why: on a kvm_pvm host the micro guest's PVH boot through SeaBIOS on q35 takes ~3 s under
KVM and under 0.1 s under TCG, and that one boot bounds the library at ``-j 2``. Whether a
QEMU option could take it away depends on what the firmware does in those seconds, so this
bench measures it instead of guessing: SeaBIOS prints its progress on the debug port 0x402
(``isa-debugcon``), the host stamps each line as it arrives, and every ``--interval-ms`` the
bench asks QEMU for the vCPU's registers (HMP ``info registers``) and files CS base + EIP in
the phase between two debug lines. Sampled addresses less than 16 bytes apart form one hot
spot (a loop); the hottest are mapped back to offsets in the firmware file and disassembled
with objdump, when it is installed, from the lowest address sampled in them (an
instruction's start) to the highest.

Baselines in the same run: each accelerator's boots without sampling (what the sampling
costs is their difference), and TCG beside KVM.

Usage: .venv/bin/python bench/firmware_profile.py [--machine q35] [--repeat N]
       [--interval-ms MS] [--bios FILE] [--qemu BIN] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from jsonout import write_json
from qemu.qmp import QMPClient

from qmpgmem.engines.qemu.process import dying_with_parent
from qmpgmem.guest.image import guest_image
from qmpgmem.guest.protocol import SYS_SIZE, parse_hello

MiB = 1 << 20
GAP = 16  # sampled addresses closer than this belong to one hot spot
FOUR_GIB = 1 << 32
REGISTERS = re.compile(r"\b[ER]IP=([0-9a-f]+)")
CODE_SEGMENT = re.compile(r"^CS =[0-9a-f]+ ([0-9a-f]+) .*?\b(CS16|CS32|CS64)\b", re.M)


@dataclass
class Sample:
    at: float  # seconds since QEMU was started
    address: int  # CS base + EIP: the linear address of the next instruction
    mode: str  # CS16, CS32 or CS64


@dataclass
class Boot:
    """One boot from QEMU's start to the guest's HELLO."""

    hello: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)


def qemu_argv(qemu: str, accel: str, machine: str, bios: Path, fds: dict[str, int]) -> list[str]:
    """The micro guest's PVH ELF on ``machine`` through ``bios``, with the debug port on."""
    region = 16 * MiB
    return [
        qemu, "-machine", machine, "-accel", accel, "-nodefaults", "-display", "none",
        "-m", f"{(SYS_SIZE + region) // MiB}M",
        "-numa", "node,memdev=sys", "-numa", "node,memdev=m0",
        "-object", f"memory-backend-ram,id=sys,size={SYS_SIZE // MiB}M",
        "-object", f"memory-backend-memfd,id=m0,size={region // MiB}M",
        "-chardev", f"socket,id=ser,fd={fds['serial']}", "-serial", "chardev:ser",
        "-chardev", f"file,id=dbg,path=/dev/fd/{fds['debug']}",
        "-device", "isa-debugcon,iobase=0x402,chardev=dbg",
        "-chardev", f"socket,id=qmp,fd={fds['qmp']}", "-mon", "chardev=qmp,mode=control",
        "-bios", str(bios), "-kernel", str(guest_image("pvh")),
    ]  # fmt: skip


async def stamp_lines(
    reader: asyncio.StreamReader, t0: float, out: list[tuple[float, str]]
) -> None:
    """Append (seconds since ``t0``, line) for each line the firmware prints."""
    while line := await reader.readline():
        out.append((time.monotonic() - t0, line.decode(errors="replace").rstrip()))


async def wait_hello(reader: asyncio.StreamReader) -> None:
    while line := await reader.readline():
        if parse_hello(line.decode(errors="replace")) is not None:
            return
    raise EOFError("QEMU closed the serial line before the guest's HELLO")


async def sample_registers(
    qmp: QMPClient, t0: float, interval: float, out: list[Sample]
) -> None:
    """Every ``interval`` s, the vCPU's linear instruction address (until cancelled)."""
    while True:
        before = time.monotonic()
        text = await qmp.execute("human-monitor-command", {"command-line": "info registers"})
        at = (before + time.monotonic()) / 2 - t0
        ip, cs = REGISTERS.search(str(text)), CODE_SEGMENT.search(str(text))
        if ip and cs:
            out.append(Sample(at, int(cs.group(1), 16) + int(ip.group(1), 16), cs.group(2)))
        await asyncio.sleep(interval)


async def boot(
    qemu: str, accel: str, machine: str, bios: Path, interval: float | None, timeout: float
) -> Boot:
    """Start QEMU, wait for HELLO (sampling when ``interval`` is set), kill QEMU."""
    pairs = {name: socket.socketpair() for name in ("serial", "qmp")}
    debug_read, debug_write = os.pipe()  # a file chardev: QEMU opens /dev/fd/N
    fds = {name: theirs.fileno() for name, (_, theirs) in pairs.items()} | {"debug": debug_write}
    # QEMU dies with this process, also when it is killed
    command, preexec_fn = dying_with_parent(qemu_argv(qemu, accel, machine, bios, fds))
    t0 = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *command,
        preexec_fn=preexec_fn,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        pass_fds=tuple(fds.values()),
        start_new_session=True,
    )
    for _, theirs in pairs.values():
        theirs.close()
    os.close(debug_write)
    lines: list[tuple[float, str]] = []
    samples: list[Sample] = []
    qmp = QMPClient("firmware-profile")
    tasks: list[asyncio.Task[None]] = []
    pipe: asyncio.BaseTransport | None = None
    try:
        # keep the writer: a StreamWriter closes its transport when it is collected
        serial, serial_writer = await asyncio.open_connection(sock=pairs["serial"][0])
        debug = asyncio.StreamReader()
        pipe, _ = await asyncio.get_running_loop().connect_read_pipe(
            lambda: asyncio.StreamReaderProtocol(debug), os.fdopen(debug_read, "rb", 0)
        )
        tasks.append(asyncio.create_task(stamp_lines(debug, t0, lines)))
        if interval is not None:
            await qmp.connect(pairs["qmp"][0])
            tasks.append(asyncio.create_task(sample_registers(qmp, t0, interval, samples)))
        try:
            async with asyncio.timeout(timeout):
                await wait_hello(serial)
        except (TimeoutError, EOFError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            err = (await proc.stderr.read()).decode(errors="replace") if proc.stderr else ""
            raise SystemExit(f"{accel}: no HELLO ({exc!r}); QEMU said: {err.strip()}") from exc
        hello = time.monotonic() - t0
        serial_writer.close()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await qmp.disconnect()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        for ours, _ in pairs.values():
            ours.close()
        if pipe is not None:
            pipe.close()
        else:
            os.close(debug_read)
    return Boot(hello, lines, samples)


def default_bios(qemu: str) -> Path:
    """The SeaBIOS image pc and q35 load when no -bios is given: the first bios-256k.bin in
    the data directories QEMU itself searches (``-L help``)."""
    dirs = subprocess.run([qemu, "-L", "help"], capture_output=True, text=True, check=True)
    for directory in dirs.stdout.split():
        candidate = Path(directory) / "bios-256k.bin"
        if candidate.is_file():
            return candidate.resolve()
    raise SystemExit(f"no bios-256k.bin in {qemu}'s data directories; pass --bios")


def file_offset(address: int, size: int) -> int | None:
    """Where ``address`` lies in a BIOS image of ``size`` bytes, when it runs from where
    the machine maps the image: below 4 GiB, or its last 128 KiB below 1 MiB."""
    if FOUR_GIB - size <= address < FOUR_GIB:
        return address - (FOUR_GIB - size)
    low = min(size, 128 * 1024)
    if 0x100000 - low <= address < 0x100000:
        return address - 0x100000 + size
    return None


@dataclass
class HotSpot:
    """Code the vCPU was found in: sampled addresses less than GAP bytes apart."""

    first: int  # lowest and highest sampled address (each an instruction's start)
    last: int
    samples: int
    mode: str

    def __contains__(self, address: int) -> bool:
        return self.first <= address <= self.last


def hot_spots(samples: list[Sample]) -> list[HotSpot]:
    """The samples' addresses clustered, the most sampled first."""
    counts = collections.Counter(s.address for s in samples)
    modes = {s.address: s.mode for s in samples}
    spots: list[HotSpot] = []
    for address in sorted(counts):
        if spots and address - spots[-1].last < GAP:
            spots[-1].last = address
            spots[-1].samples += counts[address]
        else:
            spots.append(HotSpot(address, address, counts[address], modes[address]))
    return sorted(spots, key=lambda spot: -spot.samples)


def disassemble(bios: Path, start: int, stop: int, mode: str) -> str:
    """objdump's reading of the file from offset ``start`` to the instruction at ``stop``
    ("" without objdump)."""
    objdump = shutil.which("objdump")
    if objdump is None:
        return ""
    machine = {"CS16": "i8086", "CS32": "i386", "CS64": "x86-64"}[mode]
    out = subprocess.run(
        [objdump, "-D", "-b", "binary", "-m", "i386", "-M", machine,
         f"--start-address={start}", f"--stop-address={stop + 1}", str(bios)],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    rows = [ln for ln in out.splitlines() if re.match(r"\s+[0-9a-f]+:\t", ln)]
    insns = [ln.split("\t")[-1].strip() for ln in rows]
    return "; ".join(" ".join(i.split()) for i in insns)


@dataclass
class Phase:
    after: str  # the debug line that opened it ("(start)" for QEMU's start)
    until: str  # the line that closed it ("(HELLO)" for the guest's)
    seconds: float
    samples: int
    in_hottest: int  # of its samples, those in the boot's hottest spot


def phases(b: Boot, hottest: HotSpot | None, min_share: float) -> list[Phase]:
    """The stretches between consecutive debug lines that took ``min_share`` of the boot or
    more; the short ones in between are merged into the next long one."""
    marks = [(0.0, "(start)"), *b.lines, (b.hello, "(HELLO)")]
    out: list[Phase] = []
    opened = 0
    for i in range(1, len(marks)):
        if marks[i][0] - marks[i - 1][0] < min_share * b.hello and i < len(marks) - 1:
            continue
        start, end = marks[opened][0], marks[i][0]
        inside = [s for s in b.samples if start <= s.at < end]
        hot = sum(1 for s in inside if hottest is not None and s.address in hottest)
        out.append(Phase(marks[opened][1], marks[i][1], end - start, len(inside), hot))
        opened = i
    return out


def short(line: str, width: int = 44) -> str:
    line = line.replace("|", "/")
    return line if len(line) <= width else line[: width - 1] + "…"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--machine", default="q35")
    ap.add_argument("--repeat", type=int, default=3, help="unsampled boots per accelerator")
    ap.add_argument("--interval-ms", type=float, default=4.0, help="sampling period (4)")
    ap.add_argument("--min-phase", type=float, default=0.03, help="share of a boot (0.03)")
    ap.add_argument("--hot", type=int, default=5, help="hot spots to list (5)")
    ap.add_argument("--bios", type=Path, help="default: QEMU's bios-256k.bin")
    ap.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"))
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if not args.qemu:
        raise SystemExit("needs qemu-system-x86_64 (or --qemu)")
    bios = args.bios or default_bios(args.qemu)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())

    plain: dict[str, list[float]] = {"kvm": [], "tcg": []}
    sampled: Boot | None = None
    for i in range(args.repeat):  # interleaved, so a change of load hits both alike
        for accel in ("kvm", "tcg"):
            b = await boot(args.qemu, accel, args.machine, bios, None, args.timeout)
            plain[accel].append(b.hello)
        if i == 0:
            sampled = await boot(
                args.qemu, "kvm", args.machine, bios, args.interval_ms / 1000, args.timeout
            )
    assert sampled is not None
    load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())

    size = bios.stat().st_size
    spots = hot_spots(sampled.samples)
    total = len(sampled.samples)
    hottest = spots[0] if spots else None
    kvm, tcg = statistics.median(plain["kvm"]), statistics.median(plain["tcg"])

    print(f"{args.machine}, {bios.name} ({size // 1024} KiB), {args.qemu}")
    print(f"load average {load_before} -> {load_after}\n")
    print("| start → HELLO | median | runs |\n|---|---:|---:|")
    print(f"| KVM | {kvm * 1000:.0f} ms | {len(plain['kvm'])} |")
    print(f"| TCG (KVM/TCG {kvm / tcg:.0f}x) | {tcg * 1000:.0f} ms | {len(plain['tcg'])} |")
    print(f"| KVM, sampled every {args.interval_ms:g} ms | {sampled.hello * 1000:.0f} ms | 1 |")
    print(f"\n{total} samples, {len(sampled.lines)} debug lines\n")

    rows = phases(sampled, hottest, args.min_phase)
    print("| after | until | ms | samples | in the hottest spot |\n|---|---|---:|---:|---:|")
    for p in rows:
        print(
            f"| {short(p.after)} | {short(p.until)} | {p.seconds * 1000:.0f} | {p.samples} "
            f"| {p.in_hottest} |"
        )
    hot_rows = []
    print("\n| code at | share of samples | file offset | instructions |\n|---|---:|---:|---|")
    for spot in spots[: args.hot]:
        start, stop = file_offset(spot.first, size), file_offset(spot.last, size)
        code = ""
        if start is not None and stop is not None:
            code = disassemble(bios, start, stop, spot.mode)
        where = f"{start:#x}" if start is not None else "(not in the image)"
        at = f"{spot.first:#x}-{spot.last:#x}"
        hot_rows.append((at, spot.samples / total, where, code))
        print(f"| {at} {spot.mode} | {spot.samples / total:.1%} | {where} | {code} |")

    if args.json:
        write_json(
            args.json,
            "firmware_profile",
            {
                "machine": args.machine,
                "bios": str(bios),
                "bios_size": size,
                "interval_ms": args.interval_ms,
                "hello_s": plain,
                "hello_sampled_s": sampled.hello,
                "samples": total,
                "debug_lines": len(sampled.lines),
                "phases": [p.__dict__ for p in rows],
                "load": [load_before, load_after],
            },
            hot_rows,
            columns=("code at", "share", "file offset", "instructions"),
        )


if __name__ == "__main__":
    asyncio.run(main())
