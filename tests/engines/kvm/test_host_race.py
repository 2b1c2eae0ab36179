"""stop() while a host access is still under way in its worker thread.

Why a subprocess: the bug this guards against is stop() unmapping a region while a worker
thread still hashes or writes it — a SIGSEGV, which would take pytest down with it. The
racing part runs in a child; a crash is its exit status, and the test fails on it.

The races: a 512 MiB hash (fresh guest_memfd pages, or memfd pages where the host has no
guest_memfd: the first read faults them in, 0.1 to 1 s here) or write, started and then
stop() called while it runs; and the same access whose step timed out (its coroutine
cancelled, its thread still going) before stop(). Each must end with the right answer or an
EngineError, and after stop() no access may start.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from .helpers import NO_GMEM, needs_kvm

pytestmark = needs_kvm
#: fresh pages of either kind fault in under the worker thread's access
BACKEND = "guest_memfd" if NO_GMEM is None else "memfd"

CHILD = textwrap.dedent(
    """
    import asyncio, contextlib, sys
    from pathlib import Path
    from qmpgmem import fasthash
    from qmpgmem.engines.kvm.engine import KvmEngine
    from qmpgmem.errors import EngineError
    from qmpgmem.scenario.model import VmSpec

    SIZE = 512 << 20
    SPEC = VmSpec.model_validate(
        {"memory": [{"id": "big", "size": "512M", "backend": sys.argv[3]}]}
    )

    async def one(kind, cancelled, run_dir, rom):
        e = KvmEngine(SPEC, run_dir=run_dir, boot_timeout=30, step_timeout=30, rom=rom)
        await e.start()
        rng = e.resolve("big", 0, SIZE)
        if kind == "hash":
            access = e.host_hash(rng)
        else:
            access = e.host_write(rng, bytes(SIZE))
        task = asyncio.ensure_future(access)
        await asyncio.sleep(0.005)  # the worker thread is under way
        if cancelled:  # the step's timeout: the coroutine goes, the thread stays
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await e.stop()
        outcome = "cancelled"
        if not cancelled:
            try:
                got = await task
            except EngineError as exc:
                outcome = f"engine error: {exc}"
            else:
                if kind == "hash" and got.value != fasthash.zero_hash(SIZE):
                    return f"WRONG hash {got.value:#x}"
                outcome = "completed"
        try:
            await e.host_hash(e.resolve("big", 0, 8))
        except EngineError:
            pass
        else:
            return "WRONG: an access after stop() was served"
        return outcome

    async def main():
        tmp, rom = Path(sys.argv[1]), Path(sys.argv[2]).read_bytes()
        n = 0
        for rnd in range(2):
            for kind in ("hash", "write"):
                for cancelled in (False, True):
                    n += 1
                    out = await one(kind, cancelled, tmp / f"r{n}", rom)
                    print(kind, "cancelled" if cancelled else "stopped", "->", out, flush=True)

    asyncio.run(main())
    """
)


def test_stop_waits_for_host_accesses_in_flight(tmp_path: Path, minirom: bytes) -> None:
    rom = tmp_path / "minirom.bin"
    rom.write_bytes(minirom)
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path), str(rom), BACKEND],
        capture_output=True,
        text=True,
        timeout=300,
    )
    report = f"exit status {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report  # -11: SIGSEGV, the mapping went under the thread
    lines = proc.stdout.splitlines()
    assert len(lines) == 8, report
    assert not [line for line in lines if "WRONG" in line], report
    for line in lines:
        _kind, how, _, outcome = line.split(" ", 3)
        if how == "cancelled":
            assert outcome == "cancelled", report
        else:
            assert outcome == "completed" or outcome.startswith("engine error: "), report
