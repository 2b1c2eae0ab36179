"""The shipped scenario library on this host: everything passes or skips with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpgmem.host.requirements import check_requirement_syntax
from qmpgmem.report.result import Status
from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import load_paths
from qmpgmem.session import host_context, run_scenarios

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.usefixtures("qemu_binary")]

SCENARIOS = Path(__file__).resolve().parents[1] / "scenarios"


def _library():  # type: ignore[no-untyped-def]
    loaded, issues = load_paths([SCENARIOS], requirement_check=check_requirement_syntax)
    assert not issues, [str(i) for i in issues]
    assert len(loaded) >= 30
    return loaded


@pytest.mark.parametrize(
    ("engines", "accel"),
    [(("qemu", "kvm"), None), (("qemu",), "tcg")],
    ids=["kvm-both-engines", "tcg"],
)
@pytest.mark.usefixtures("no_leftovers")
async def test_library_passes_or_skips_with_reason(
    tmp_path: Path, engines: tuple[str, ...], accel: str | None
) -> None:
    if accel is None and not Path("/dev/kvm").exists():
        pytest.skip("needs /dev/kvm")
    loaded = _library()
    ctx = await host_context()
    report = await run_scenarios(
        loaded,
        ctx,
        [RunOptions(engine=e, accel=accel, artifacts_dir=tmp_path / "a") for e in engines],
    )
    bad = [
        (r.scenario, r.engine, r.status, r.reason)
        for r in report.results
        if r.status not in (Status.PASSED, Status.SKIPPED)
    ]
    assert not bad
    assert all(r.reason for r in report.results if r.status is Status.SKIPPED)
    # the library is not all skips: the basic and lifecycle scenarios run everywhere
    assert report.summary.passed >= 12


@pytest.mark.usefixtures("no_leftovers", "kvm_available")
async def test_vmfd_rebuild_on_reset_with_qemu_11(tmp_path: Path, qemu_binary: str) -> None:
    """QEMU >= 11.0 rebuilds the VM fd on reset (the confidential-guest path), real here."""
    import os

    extra = [b for b in os.environ.get("QMPGMEM_EXTRA_QEMU", "").split(":") if b]
    if not extra:
        pytest.skip("needs a QEMU 11.x binary in QMPGMEM_EXTRA_QEMU (make setup fetches one)")
    loaded = [s for s in _library() if s.scenario.name == "lifecycle-reset-rebuilds-vmfd"]
    ctx = await host_context([qemu_binary, *extra])
    report = await run_scenarios(loaded, ctx, RunOptions(artifacts_dir=tmp_path / "a"))
    (result,) = report.results
    if result.status is Status.SKIPPED:
        pytest.skip(f"the extra QEMU cannot run it: {result.reason}")
    assert result.status is Status.PASSED, result.reason
    assert result.qemu in extra
