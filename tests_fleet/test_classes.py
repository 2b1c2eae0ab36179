"""deploy/classes holds a baseline per host image of this kind of machine; this machine fits
the one conftest.HOST_CLASS names, and strict mode fails it against the other, naming what
changed: a kernel that drops guest_memfd is what qualifying a host image must catch."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests_fleet.conftest import HOST_CLASS, QMPGMEM, REPO, SELECT, read_json

CLASSES = REPO / "deploy" / "classes"
OTHER = {"kvm_pvm": "kvm_pvm-no-gmem", "kvm_pvm-no-gmem": "kvm_pvm"}


def strict_run(host_class: str, out: Path) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(
        [str(QMPGMEM), "run", "scenarios/", "--engine", "qemu", "--engine", "kvm",
         "-m", SELECT, "--strict", "--expect-skips", str(CLASSES / f"{host_class}.yaml"),
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    return done.returncode, read_json(out)


def test_this_machine_fits_its_class_and_not_the_other(tmp_path: Path) -> None:
    rc, own = strict_run(HOST_CLASS, tmp_path / "own.json")
    assert rc == 0 and own["gate"]["passed"], own["gate"]
    rc, other = strict_run(OTHER[HOST_CLASS], tmp_path / "other.json")
    gate = other["gate"]
    assert rc != 0 and not gate["passed"], gate
    if HOST_CLASS == "kvm_pvm-no-gmem":
        # held to the image that had guest_memfd: skips whose reasons now name the capability
        assert "unexpected skip" in gate["verdict"], gate
        differ = {(v["scenario"], v["engine"]) for v in gate["violations"]}
        reasons = [r["reason"] for r in other["results"] if (r["scenario"], r["engine"]) in differ]
        assert reasons and all("KVM_CAP_GUEST_MEMFD=0" in r for r in reasons), reasons
    else:
        # held to the image without it: guest_memfd scenarios ran that were to skip
        assert gate["unused_expected_skips"], gate
