"""A signal at any moment of a run — start-up, the host probe, a VM's boot, its steps, its
teardown, the reports — ends with exit 130 (or 0 if the run had finished) and leaves no QEMU
and no run directory; a second signal during teardown does not cut it short."""

from __future__ import annotations

import signal

import pytest

from tests.signal_storm import storm_once

# serial: the moments are placed on the timeline of a run on an otherwise idle worker; under
# pytest-xdist the other workers' load moved them (found running the suite with -n 2)
pytestmark = [
    pytest.mark.qemu,
    pytest.mark.slow,
    pytest.mark.serial,
    pytest.mark.usefixtures("qemu_binary"),
]

# Moments across the phases of a ~1.5 s run of basic-smoke: imports, probe (QEMU started
# for query-qmp-schema and the flavour checks), guest boot and steps, teardown and reports.
MOMENTS = [0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.05, 1.2, 1.4]


@pytest.mark.parametrize("delay", MOMENTS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=str)
def test_one_signal(delay: float, sig: signal.Signals) -> None:
    run = storm_once(delay, sig)
    assert run.clean, run.describe() + "\n" + run.stderr_tail


@pytest.mark.parametrize("delay", [0.3, 0.6, 0.9, 1.2])
@pytest.mark.parametrize("engine", ["qemu", "kvm"])
def test_a_second_signal_during_teardown(delay: float, engine: str, kvm_available: None) -> None:
    run = storm_once(delay, signal.SIGTERM, second_after_s=0.003, engine=engine)
    assert run.clean, run.describe() + "\n" + run.stderr_tail
