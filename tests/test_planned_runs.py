"""``session.planned_runs``: the expansion of scenarios x engines x binaries x repeats that
``run --matrix`` and ``--repeat`` make, decided before anything starts (no QEMU needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpgmem.runner import RunOptions
from qmpgmem.scenario.loader import LoadedScenario, load_paths
from qmpgmem.session import planned_runs

ROOT = Path(__file__).resolve().parents[1]
BINARIES = ["/usr/bin/qemu-system-x86_64", "/opt/qemu-11/bin/qemu-system-x86_64"]


@pytest.fixture(scope="module")
def two() -> list[LoadedScenario]:
    loaded, issues = load_paths(
        [ROOT / "scenarios/basic/smoke.yaml", ROOT / "scenarios/lifecycle/reset-rebuilds-vmfd.yaml"]
    )
    assert not issues
    return loaded


def _shape(runs: list[tuple[LoadedScenario, RunOptions]]) -> list[tuple[str, str, object, object]]:
    return [(s.scenario.name, o.engine, o.qemu, o.repeat_index) for s, o in runs]


def test_without_matrix_or_repeat_one_run_per_scenario_and_engine(
    two: list[LoadedScenario],
) -> None:
    """The default: nothing pinned (the runner takes the first binary that meets the
    requirements), nothing numbered."""
    runs = planned_runs(two, [RunOptions("qemu"), RunOptions("kvm")], BINARIES)
    assert _shape(runs) == [
        ("basic-smoke", "qemu", None, None),
        ("lifecycle-reset-rebuilds-vmfd", "qemu", None, None),
        ("basic-smoke", "kvm", None, None),
        ("lifecycle-reset-rebuilds-vmfd", "kvm", None, None),
    ]


def test_matrix_pins_each_binary_on_the_qemu_engine_only(two: list[LoadedScenario]) -> None:
    runs = planned_runs(two, [RunOptions("qemu"), RunOptions("kvm")], BINARIES, matrix=True)
    a, b = BINARIES
    assert _shape(runs) == [
        ("basic-smoke", "qemu", a, None),
        ("basic-smoke", "qemu", b, None),
        ("lifecycle-reset-rebuilds-vmfd", "qemu", a, None),
        ("lifecycle-reset-rebuilds-vmfd", "qemu", b, None),
        ("basic-smoke", "kvm", None, None),  # the kvm engine has no binary axis
        ("lifecycle-reset-rebuilds-vmfd", "kvm", None, None),
    ]


def test_repeat_numbers_every_run_of_the_matrix(two: list[LoadedScenario]) -> None:
    opts = RunOptions("qemu", allow_unsafe=True)
    runs = planned_runs(two[:1], opts, BINARIES, matrix=True, repeat=3)
    a, b = BINARIES
    assert _shape(runs) == [("basic-smoke", "qemu", q, i) for q in (a, b) for i in range(3)]
    assert all(o.allow_unsafe for _, o in runs)  # the rest of the options is kept
    assert opts.qemu is None and opts.repeat_index is None  # and the caller's left alone


def test_a_repeat_below_one_is_refused(two: list[LoadedScenario]) -> None:
    with pytest.raises(ValueError, match="repeat must be at least 1, not 0"):
        planned_runs(two, RunOptions(), BINARIES, repeat=0)
