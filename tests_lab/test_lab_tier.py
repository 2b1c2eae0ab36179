"""Real private<->shared conversions in the lab, the checks that must fail there, the kernel
contract, and the kernel's own selftests on the same kernel."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests_lab.conftest import lab, statuses

CONVERSION = "scenarios/conversion"

#: What each wrong-expectation scenario runs on: a sw-protected VM with one guest_memfd region.
SW_PROTECTED_VM = """
requires: [kvm, guest_memfd, "vm_type:sw-protected", memory_attributes_private,
           exit_hypercall_map_gpa_range, hypercall_returns]
vm:
  vm_type: sw-protected
  memory: [{id: m0, size: 4M, backend: guest_memfd, gmem_flags: []}]
"""

#: Wrong expectations: each must FAIL where conversions really happen.
WRONG = {
    "wrong-two-vcpus-private-survives": """
        name: wrong-two-vcpus-private-survives
        description: Claims each vCPU's private data survives the other's view after both
          convert back to shared in parallel (it must not; to-shared discards private pages).
        requires: [kvm, guest_memfd, "vm_type:sw-protected", memory_attributes_private,
                   exit_hypercall_map_gpa_range, hypercall_returns]
        vm:
          vm_type: sw-protected
          vcpus: 2
          memory:
            - {id: m0, size: 4M, backend: guest_memfd, gmem_flags: []}
            - {id: m1, size: 4M, backend: guest_memfd, gmem_flags: []}
        steps:
          - action: guest.parallel
            steps:
              - {action: guest.convert, vcpu: 0, range: {region: m0, size: 64K}, to: private}
              - {action: guest.convert, vcpu: 1, range: {region: m1, size: 64K}, to: private}
          - action: guest.parallel
            steps:
              - {action: guest.write, vcpu: 0, range: {region: m0, size: 64K}, seed: 31}
              - {action: guest.write, vcpu: 1, range: {region: m1, size: 64K}, seed: 32}
          - action: guest.parallel
            steps:
              - {action: guest.convert, vcpu: 0, range: {region: m0, size: 64K}, to: shared}
              - {action: guest.convert, vcpu: 1, range: {region: m1, size: 64K}, to: shared}
          - action: guest.parallel
            steps:
              - {action: guest.verify, vcpu: 1, range: {region: m0, size: 64K},
                 expect: {pattern: 31}}
              - {action: guest.verify, vcpu: 0, range: {region: m1, size: 64K},
                 expect: {pattern: 32}}
        """,
    "wrong-host-sees-private": """
        name: wrong-host-sees-private
        description: Claims the host reads the guest's private data (it must not).
        steps:
          - {action: guest.convert, range: {region: m0, offset: 1M, size: 64K}, to: private}
          - {action: guest.write, range: {region: m0, offset: 1M, size: 64K}, seed: 5}
          - {action: guest.verify, range: {region: m0, offset: 1M, size: 64K},
             expect: {pattern: 5}}
          - action: host.read
            range: {region: m0, offset: 1M, size: 64K}
            expect: {pattern: 5}
        """,
    "wrong-data-survives-conversion": """
        name: wrong-data-survives-conversion
        description: Claims data survives a private->shared round trip (it must not).
        steps:
          - {action: guest.write, range: {region: m0, offset: 2M, size: 64K}, seed: 9}
          - {action: guest.convert, range: {region: m0, offset: 2M, size: 64K}, to: private}
          - {action: guest.convert, range: {region: m0, offset: 2M, size: 64K}, to: shared}
          - {action: guest.verify, range: {region: m0, offset: 2M, size: 64K},
             expect: {pattern: 9}}
        """,
}


def test_conversions_pass_and_wrong_expectations_fail(lab_kernel: str, tmp_path: Path) -> None:
    """One L1 boot: every conversion and kernel scenario on the kvm engine, the QEMU engine's
    hypercall scenario, and the wrong expectations, which must fail."""
    wrong_dir = tmp_path / "wrong"
    wrong_dir.mkdir()
    for name, text in WRONG.items():
        text = textwrap.dedent(text)
        (wrong_dir / f"{name}.yaml").write_text(text if "\nvm:" in text else text + SW_PROTECTED_VM)
    report = tmp_path / "run.json"
    done = lab(
        "run", "--engine", "kvm", "--engine", "qemu", CONVERSION, "scenarios/kernel",
        str(wrong_dir), "--json", str(report), "--artifacts", str(tmp_path / "artifacts"),
    )  # fmt: skip
    assert done.returncode == 1, "the wrong expectations must make the run fail"
    seen = statuses(report)
    for name in WRONG:
        assert seen[(name, "kvm")] == "failed", seen
    for (name, engine), status in seen.items():
        if name in WRONG:
            continue
        wanted = {"passed"} if engine == "kvm" else {"passed", "skipped"}
        assert status in wanted, f"{name} [{engine}] is {status} in the lab"
    conversions = [n for (n, e) in seen if n.startswith("conversion-") and e == "kvm"]
    assert len(conversions) >= 6
    # On kvm_amd a guest hypercall returns: QEMU's default VM answers -KVM_ENOSYS.
    assert seen[("conversion-convert-on-default-vm", "qemu")] == "passed"
    data = json.loads(report.read_text())
    assert data["host"]["kvm_backend"] == "kvm_amd"
    assert data["host"]["cpu"].startswith("emulated"), "lab results must say the CPU is emulated"


#: The lab kernels the contract and the selftests are held against each other on: the default
#: (built by the tier itself) and an older series where it is cached.
SERIES = ["default", "6.12"]


def _kernel_args(series: str, lab_kernel: str) -> list[str]:
    """``--kernel SERIES`` (the default kernel needs none); a skip when it is not built."""
    from qmpgmem.lab.build import find_kernel

    if series == "default":
        return ["--kernel", lab_kernel]
    if find_kernel(series) is None:
        pytest.skip(f"no {series} lab kernel built (qmpgmem lab kernel --version {series})")
    return ["--kernel", series]


@pytest.mark.parametrize("series", SERIES)
def test_the_contract_agrees_with_the_selftests_on_the_same_kernel(
    series: str, lab_kernel: str, tmp_path: Path
) -> None:
    """No check fails, every selftest passes, and the two agree behaviour by behaviour
    (engines/kvm/contract/upstream.py maps each selftest to the checks it covers), both
    with two NUMA nodes in L1 so the NUMA checks and test_mbind run."""
    from qmpgmem.engines.kvm.contract.upstream import agreement

    kernel = _kernel_args(series, lab_kernel)
    contract = tmp_path / "contract.json"
    done = lab("kernel-contract", *kernel, "--l1-numa", "2", "--json", str(contract))
    data = json.loads(contract.read_text())
    assert data["kind"] == "kernel-contract"
    failed = [c for c in data["checks"] if c["outcome"] == "failed"]
    assert not failed, failed
    assert done.returncode == 0
    selftests = tmp_path / "selftests.json"
    done = lab("selftests", *kernel, "--l1-numa", "2", "--json", str(selftests))
    seen = statuses(selftests)
    assert len(seen) == 6
    bad = {k: v for k, v in seen.items() if v != "passed"}
    assert not bad, bad
    assert done.returncode == 0
    disagreements = agreement(
        [(c["name"], c["outcome"]) for c in data["checks"]],
        [(name.split()[0], status) for (name, _), status in seen.items()],
    )
    assert not disagreements, [str(d) for d in disagreements]


@pytest.mark.parametrize("series", ["6.12"])
def test_conversions_on_another_kernel(series: str, tmp_path: Path) -> None:
    """Every conversion scenario on an older lab kernel too, where it is built."""
    from qmpgmem.lab.build import find_kernel

    if find_kernel(series) is None:
        pytest.skip(f"no {series} lab kernel built (qmpgmem lab kernel --version {series})")
    report = tmp_path / "run.json"
    done = lab("run", "--kernel", series, "--engine", "kvm", CONVERSION, "--json", str(report))
    seen = statuses(report)
    assert all(v == "passed" for v in seen.values()), seen
    assert done.returncode == 0
