"""KVM's binary statistics of a vCPU (engines/kvm/stats.py) on the real /dev/kvm."""

from __future__ import annotations

from pathlib import Path

from qmpgmem.engines.kvm.engine import KvmEngine
from qmpgmem.engines.kvm.stats import changes
from qmpgmem.scenario.model import VmSpec

from .helpers import needs_kvm

pytestmark = needs_kvm
SPEC = VmSpec.model_validate({"memory": [{"id": "m0", "size": "2M", "backend": "memfd"}]})


async def test_a_request_moves_the_vcpus_exit_counters(tmp_path: Path, minirom: bytes) -> None:
    """The test ROM answers a PING over COM1, a byte per I/O exit: KVM counts them, and the
    statistics file reads while the vCPU runs (it was opened before the first KVM_RUN)."""
    e = KvmEngine(SPEC, run_dir=tmp_path / "run", boot_timeout=5, step_timeout=5, rom=minirom)
    async with e:
        assert e.channel is not None and e._vcpu is not None
        stats = e._vcpu_stats[e._vcpu.fd]
        before = stats.read()
        assert {"exits", "io_exits", "halt_exits", "pf_taken"} <= set(before)
        await e.channel.ping()
        moved = changes(before, stats.read())
        # "OK PONG\n" alone is 8 writes to THR, each after an LSR read: an exit to this
        # process each (kvm_pvm emulates the real-mode ROM and counts them in exits only)
        assert moved.get("exits", 0) >= 16, moved
    assert stats.fd == -1  # closed with the VM
