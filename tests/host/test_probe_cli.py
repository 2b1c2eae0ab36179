"""``qmpgmem probe``: the table and the JSON document agree with the probe they print."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from qmpgmem.cli.group import EXIT_USAGE, cli
from qmpgmem.host.kernel import probe_kvm


def _probe(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["probe", *args], catch_exceptions=False)
    return result.exit_code, result.output


def _json(*args: str) -> dict[str, Any]:
    code, output = _probe("--json", *args)
    assert code == 0, output
    doc: dict[str, Any] = json.loads(output)
    return doc


def test_json_summary_is_the_probe(kvm_available: None, qemu_binary: str) -> None:
    doc = _json("--no-flavours", "--qemu", qemu_binary)
    kvm = probe_kvm()
    summary = doc["summary"]
    assert summary["backend"] == kvm.backend
    assert summary["guest_memfd"] == (kvm.caps["KVM_CAP_GUEST_MEMFD"] > 0)
    assert summary["guest_memfd_flags"] == kvm.gmem_flags
    assert summary["vm_types"] == kvm.vm_types
    assert summary["memory_attributes_private"] == {
        t: "private" in a for t, a in kvm.memory_attributes.items()
    }
    (qemu,) = doc["qemu"]
    assert summary["qemu"][0]["version"] == qemu["version_str"]
    assert summary["qemu"][0]["confidential_types"] == [
        t for t in ("sev-guest", "sev-snp-guest", "tdx-guest", "sw-protected-vm")
        if t in qemu["qom_types"]
    ]  # fmt: skip
    assert doc["flavours"] == {}
    for fact in doc["facts"]:
        assert set(fact) == {"name", "value", "source"} and fact["source"]
    by_name = {f["name"]: f for f in doc["facts"]}
    assert by_name["KVM_CAP_GUEST_MEMFD"]["source"] == (
        "KVM_CHECK_EXTENSION(KVM_CAP_GUEST_MEMFD=234) on /dev/kvm"
    )


def test_json_flavours_carry_qemus_own_refusal(kvm_available: None, qemu_binary: str) -> None:
    doc = _json("--qemu", qemu_binary)
    plans = doc["flavours"][qemu_binary]
    assert set(plans) == {"sev-snp", "tdx", "memfd-private", "guest-memfd-property", "auto"}
    has_type = "sev-snp-guest" in doc["qemu"][0]["qom_types"]
    if has_type and "sev-snp" not in doc["kvm"]["vm_types"]:
        reason = plans["sev-snp"]["skip_reason"]
        assert "QEMU refused it:" in reason and "not supported by KVM" in reason
    for name, plan in plans.items():
        assert plan["usable"] == (plan["skip_reason"] is None), name


def test_table_shows_names_verbatim(kvm_available: None, qemu_binary: str) -> None:
    code, output = _probe("--no-flavours", "--qemu", qemu_binary)
    assert code == 0, output
    # rich would eat "[...]" as markup if the names were not passed as plain text
    assert "qemu.type[sev-snp-guest]" in output
    assert "KVM_CAP_GUEST_MEMFD_FLAGS" in output and "memory_attributes[default]" in output


def test_missing_binary_is_a_usage_error(tmp_path: Path) -> None:
    code, output = _probe("--qemu", str(tmp_path / "qemu"))
    assert code == EXIT_USAGE
    assert "not found" in output
