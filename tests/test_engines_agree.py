"""The same scenarios on both engines: identical guest-side hashes, step by step."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpgmem.report.result import Status
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import load_scenario
from qmpgmem.session import host_context, run_scenarios

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "kvm_available")]

ROOT = Path(__file__).resolve().parents[1]
SMOKE = [
    "basic/smoke.yaml",
    "basic/overwrite-partial.yaml",
    "basic/small-unaligned.yaml",
    "basic/file-backend.yaml",
]


@pytest.mark.usefixtures("no_leftovers")
async def test_smoke_scenarios_hash_identically_on_both_engines(tmp_path: Path) -> None:
    loaded = [load_scenario(ROOT / "scenarios" / name) for name in SMOKE]
    ctx = await host_context()
    report = await run_scenarios(
        loaded,
        ctx,
        [RunOptions(engine=e, artifacts_dir=tmp_path / "arts") for e in ("qemu", "kvm")],
    )
    by_engine = {
        e: {r.scenario: r for r in report.results if r.engine == e} for e in ("qemu", "kvm")
    }
    compared = 0
    for name, q in by_engine["qemu"].items():
        k = by_engine["kvm"][name]
        assert q.status is Status.PASSED, q.reason
        assert k.status is Status.PASSED, k.reason
        seen_q = [(s.index, s.seen) for s in q.steps if s.seen]
        seen_k = [(s.index, s.seen) for s in k.steps if s.seen]
        assert seen_q == seen_k, name
        # each host.read read the pages in place, and the report names the path
        assert {s.via for s in q.steps if s.action == "host.read"} <= {"map_files", "backend file"}
        assert {s.via for s in k.steps if s.action == "host.read"} <= {
            "memfd mapping",
            "file mapping",
        }
        assert all(s.via is None for s in q.steps + k.steps if s.action != "host.read")
        compared += len(seen_q)
    assert compared >= 10
