"""``lab run --kernel A --kernel B`` for real: one L1 boot per cached lab kernel, one merged
report whose results carry their kernel. Skips, naming what is missing, unless two kernel
series are in the cache (this test builds none: `qmpgmem lab kernel` and
`qmpgmem lab kernel --version 6.12` do)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests_lab.conftest import lab

SCENARIO = "scenarios/kernel/gmem-guest-host-roundtrip.yaml"


def two_kernels() -> list[tuple[str, str]]:
    """(series, release) of the two newest cached series, or a skip saying what is there."""
    from qmpgmem.lab.build import cached_kernels, kernels_dir

    series: dict[str, str] = {}
    for kernel in cached_kernels():
        series.setdefault(kernel.series, kernel.release)
    if len(series) < 2:
        have = ", ".join(f"{s} ({r})" for s, r in series.items()) or "none"
        pytest.skip(
            f"needs two lab kernel series cached in {kernels_dir()}; cached: {have} "
            "(build them with: qmpgmem lab kernel; qmpgmem lab kernel --version 6.12)"
        )
    return list(series.items())[:2]


def test_each_kernel_boots_its_own_l1_and_the_report_keeps_them_apart(tmp_path: Path) -> None:
    (a, release_a), (b, release_b) = two_kernels()
    out, junit = tmp_path / "k.json", tmp_path / "k.xml"
    done = lab(
        "run", "--kernel", a, "--kernel", b, "--engine", "kvm", SCENARIO,
        "--json", str(out), "--junit", str(junit), "--artifacts", str(tmp_path / "arts"),
    )  # fmt: skip
    assert done.returncode in (0, 1), done.stderr
    assert done.stderr.count("lab: booting L1 (") >= 2  # one boot per kernel
    doc = json.loads(out.read_text())
    assert doc["complete"], doc.get("interrupted")
    assert [r["kernel"] for r in doc["results"]] == [release_a, release_b]
    ids = [r["id"] for r in doc["results"]]
    assert ids == [f"kernel-gmem-guest-host-roundtrip [kvm, kernel {k}]"
                   for k in (release_a, release_b)]  # fmt: skip
    assert doc["host"]["kernel_release"] == f"{release_a}, {release_b}"
    for k in (release_a, release_b):
        assert f'name="kernel-gmem-guest-host-roundtrip [kvm, kernel {k}]"' in junit.read_text()
