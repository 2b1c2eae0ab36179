"""The CPU under KVM: read by executing cpuid, described for every report."""

from __future__ import annotations

from pathlib import Path

from qmpgmem.host.cpu import cpu_kind, cpuid, describe, hypervisor_signature


def test_cpuid_leaf0_names_the_vendor_as_proc_cpuinfo_does() -> None:
    regs = cpuid(0)
    assert regs is not None
    vendor = b"".join(r.to_bytes(4, "little") for r in (regs[1], regs[3], regs[2])).decode()
    cpuinfo = Path("/proc/cpuinfo").read_text()
    assert f"vendor_id\t: {vendor}" in cpuinfo


def test_hypervisor_bit_agrees_with_proc_cpuinfo() -> None:
    flags = next(
        ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")
    )
    assert (hypervisor_signature() is not None) == ("hypervisor" in flags.split())


def test_descriptions() -> None:
    assert describe("ro quiet", True, None) == "bare metal"
    assert describe("ro", True, "KVMKVMKVM\0\0\0") == "virtual (KVM)"
    assert describe("ro", True, "TCGTCGTCGTCG").emulated
    assert describe("console=ttyS0 qmpgmem.lab=tcg", True, "KVMKVMKVM\0\0\0") == (
        "emulated (QEMU TCG, qmpgmem lab)"
    )
    assert not describe("ro", True, "Microsoft Hv").emulated
    assert describe("ro", False, None).startswith("unknown")


def test_this_host_is_described_as_its_cpuinfo_says() -> None:
    flags = next(
        ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")
    )
    if "qmpgmem.lab=tcg" in Path("/proc/cmdline").read_text().split():
        assert cpu_kind().emulated
    elif "hypervisor" in flags.split():
        assert cpu_kind().startswith(("virtual", "emulated")), cpu_kind()
    else:
        assert cpu_kind() == "bare metal"
