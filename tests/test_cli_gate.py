"""``run --strict``: a host whose KVM is unusable, or that skips what its baseline does not
expect, fails the run with one sentence; without --strict every line names the accelerator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary", "no_leftovers")]

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "scenarios/basic/smoke.yaml")
BASIC = str(ROOT / "scenarios/basic")

# Run a command in a private mount namespace where /dev/kvm is hidden (a tmpfs /dev holding
# only the nodes QEMU needs) or is /dev/null (not a KVM device). The host's /dev is untouched.
_HIDE_KVM = r"""
set -e
old=$(mktemp -d)
mount --bind /dev "$old"
mount -t tmpfs -o mode=755 qmpgmem-test /dev
for n in null zero full random urandom tty ptmx; do
  touch /dev/$n; mount --bind "$old/$n" /dev/$n
done
mkdir /dev/pts /dev/shm
mount --bind "$old/pts" /dev/pts
mount --bind "$old/shm" /dev/shm
umount -l "$old"; rmdir "$old"
exec "$@"
"""
_NOT_KVM = 'mount --bind /dev/null /dev/kvm && exec "$@"'


def qmpgmem(*args: str, cwd: Path, wrap: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "qmpgmem.cli", *args]
    if wrap is not None:
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", wrap, "sh", *argv]
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture
def namespaces() -> None:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to hide /dev/kvm in a private mount namespace")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m refused here: {probe.stderr.strip()}")


@pytest.mark.usefixtures("namespaces")
@pytest.mark.parametrize(
    ("wrap", "why"),
    [
        (_HIDE_KVM, "/dev/kvm does not exist"),
        (_NOT_KVM, "/dev/kvm is not a KVM device (KVM_GET_API_VERSION: Inappropriate ioctl"),
    ],
    ids=["hidden", "dev-null"],
)
def test_unusable_kvm_fails_strict_with_one_sentence(tmp_path: Path, wrap: str, why: str) -> None:
    args = ("run", SMOKE, "--engine", "qemu", "--engine", "kvm", "--json", "r.json")
    lenient = qmpgmem(*args, cwd=tmp_path, wrap=wrap)
    assert lenient.returncode == 0, lenient.stdout + lenient.stderr
    assert "Traceback" not in lenient.stderr
    # every result line names engine and accelerator; the header says why TCG
    assert "basic-smoke [qemu/tcg, fallback]" in lenient.stdout
    assert "basic-smoke [kvm/kvm]" in lenient.stdout
    assert f"accelerator: KVM unusable — {why}" in lenient.stdout
    result = json.loads((tmp_path / "r.json").read_text())["results"][0]
    assert result["accel"] == "tcg" and why in result["accel_note"]

    strict = qmpgmem(*args, "--strict", cwd=tmp_path, wrap=wrap)
    assert strict.returncode == 1, strict.stdout + strict.stderr
    verdict = [line for line in strict.stdout.splitlines() if line.startswith("strict:")]
    assert verdict == [f"strict: failed — KVM is unusable here: {verdict[0].split('here: ', 1)[1]}"]
    assert why in verdict[0]
    assert "1 ran on TCG instead of KVM" in verdict[0] and "1 unexpected skip" in verdict[0]
    gate = json.loads((tmp_path / "r.json").read_text())["gate"]
    assert gate["passed"] is False and why in gate["verdict"]


@pytest.mark.usefixtures("namespaces")
def test_unusable_kvm_is_a_sentence_for_probe_and_fuzz(tmp_path: Path) -> None:
    for args in (("probe",), ("fuzz", "--seed", "1", "--engine", "kvm", "--count", "1")):
        res = qmpgmem(*args, cwd=tmp_path, wrap=_NOT_KVM)
        assert "Traceback" not in res.stderr, res.stderr
        assert "/dev/kvm is not a KVM device" in res.stdout + res.stderr


def test_strict_holds_skips_against_the_written_baseline(tmp_path: Path) -> None:
    args = ("run", BASIC, "--engine", "qemu", "-m", "guest_memfd or qmp")
    written = qmpgmem(*args, "--write-expected-skips", "host.yaml", cwd=tmp_path)
    assert written.returncode == 0, written.stdout + written.stderr
    baseline = (tmp_path / "host.yaml").read_text()
    assert "wrote 1 expected skip(s) to host.yaml" in written.stdout
    assert "scenario: basic-gmem-punch-hole" in baseline and "engine: qemu" in baseline

    # Without the baseline every skip breaks the gate; with it the same run passes.
    assert qmpgmem(*args, "--strict", cwd=tmp_path).returncode == 1
    ok = qmpgmem(*args, "--strict", "--expect-skips", "host.yaml", cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "strict: passed — every skip is expected by host.yaml" in ok.stdout

    # The environment sets the same defaults, as a CI job would.
    env_ok = subprocess.run(
        [sys.executable, "-m", "qmpgmem.cli", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "QMPGMEM_STRICT": "1", "QMPGMEM_EXPECT_SKIPS": "host.yaml"},
    )
    assert env_ok.returncode == 0 and "strict: passed" in env_ok.stdout

    # A known skip whose reason changed is a violation naming the baseline's line.
    (tmp_path / "host.yaml").write_text(
        baseline.replace("QEMU exposes no guest_memfd fd", "something else")
    )
    changed = qmpgmem(*args, "--strict", "--expect-skips", "host.yaml", cwd=tmp_path)
    assert changed.returncode == 1
    assert "basic-gmem-punch-hole [qemu]: skip reason changed: host.yaml:" in changed.stdout


def test_bad_baseline_is_a_usage_error_naming_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "schema_version: 1\nexpected_skips:\n  - scenario: basic-smoke\n    engnie: qemu\n"
    )
    res = qmpgmem("run", SMOKE, "--strict", "--expect-skips", "bad.yaml", cwd=tmp_path)
    assert res.returncode == 2
    assert "bad.yaml:4:5: expected_skips[0].engnie: unknown key" in res.stderr


def test_tag_selection(tmp_path: Path) -> None:
    plan = qmpgmem("run", BASIC, "--plan", "-m", "smoke or (qmp and not basic)", cwd=tmp_path)
    assert plan.returncode == 0, plan.stderr
    lines = [line for line in plan.stdout.splitlines() if "WOULD-" in line]
    assert len(lines) == 1 and "basic-smoke" in lines[0]
    none = qmpgmem("run", BASIC, "-m", "no-such-tag", cwd=tmp_path)
    assert none.returncode == 2 and "no scenario matches -m 'no-such-tag'" in none.stderr
    bad = qmpgmem("run", BASIC, "-m", "smoke and", cwd=tmp_path)
    assert bad.returncode == 2 and "-m 'smoke and': column 10" in bad.stderr
