"""QMP faults a real QEMU cannot produce on demand, from a fake QEMU: clear errors, no leftovers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from qmpgmem.engines.qemu.engine import QemuEngine
from qmpgmem.errors import VMLaunchError
from qmpgmem.scenario.model import VmSpec

FAKE = Path(__file__).with_name("fake_qemu.py")


def _engine(tmp_path: Path) -> QemuEngine:
    wrapper = tmp_path / "qemu-fake"
    wrapper.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} \"$@\"\n")
    wrapper.chmod(0o755)
    vm = VmSpec.model_validate({"memory": [{"id": "m0", "size": "4M"}]})
    return QemuEngine(vm, qemu_binary=str(wrapper), accel="tcg", boot_image=None,
                      boot_timeout=1.5)  # fmt: skip


@pytest.mark.usefixtures("no_leftovers")
@pytest.mark.parametrize(
    ("mode", "words"),
    [
        ("silent", "no QMP greeting and negotiation within 1.5 s"),
        ("garbage", "QMP failed while waiting for QMP greeting and negotiation"),
        ("bad-reply", "no answer to QMP cont within 1.5 s"),
    ],
)
async def test_qmp_faults_fail_the_launch_and_clean_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, words: str
) -> None:
    monkeypatch.setenv("FAKE_QMP_MODE", mode)
    eng = _engine(tmp_path)
    with pytest.raises(VMLaunchError) as info:
        async with eng:
            pass
    assert words in str(info.value)
    assert eng.process.returncode is not None  # the fake was killed and reaped
    assert not eng.run_dir.exists()
