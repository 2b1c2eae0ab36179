import subprocess
from pathlib import Path

import pytest

from qmpgmem.engines.qemu.trace import count_matching, parse_trace_lines, read_trace

# Lines as QEMU 10.0.2 writes them to -D (the second one with a guest_memfd slot).
LOG = "\n".join(
    [
        "1234@1700000000.000001:kvm_set_user_memory AddrSpace#0 Slot#0 flags=0x0 gpa=0x0"
        " size=0x400000 ua=0x7f00 guest_memfd=-1 guest_memfd_offset=0x0 ret=0",
        "kvm_set_user_memory AddrSpace#0 Slot#1 flags=0x4 gpa=0x400000 size=0x1000000"
        " ua=0x7f10 guest_memfd=12 guest_memfd_offset=0x0 ret=0",
        "kvm_convert_memory start=0x400000 size=0x1000 shared_to_private",
        "something_else a=1",
    ]
)


def test_parses_fields_and_filters_names() -> None:
    recs = parse_trace_lines(LOG.splitlines(), {"kvm_set_user_memory", "kvm_convert_memory"})
    assert [r.name for r in recs] == ["kvm_set_user_memory"] * 2 + ["kvm_convert_memory"]
    assert recs[1].fields["guest_memfd"] == "12"
    assert recs[1].fields["flags"] == "0x4"


def test_count_matching_compares_ints_numerically() -> None:
    recs = parse_trace_lines(LOG.splitlines(), None)
    assert count_matching(recs, "kvm_set_user_memory", {"guest_memfd": -1}) == 1
    assert count_matching(recs, "kvm_set_user_memory", {"flags": 4}) == 1
    assert count_matching(recs, "kvm_set_user_memory", {}) == 2
    assert count_matching(recs, "kvm_convert_memory", {"start": 0x400000}) == 1
    assert count_matching(recs, "kvm_set_user_memory", {"gpa": "0x0"}) == 1


@pytest.mark.usefixtures("kvm_available")
def test_real_qemu_trace_log_parses(tmp_path: Path, qemu_binary: str) -> None:
    """The -D log of a real QEMU under KVM: its memory slots, none with a guest_memfd."""
    log = tmp_path / "trace.log"
    subprocess.run(
        [qemu_binary, "-machine", "microvm", "-accel", "kvm", "-m", "8M", "-nodefaults",
         "-display", "none", "-trace", "enable=kvm_set_user_memory", "-D", str(log), "-S",
         "-qmp", "stdio"],
        input='{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n',
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    records = read_trace(log, {"kvm_set_user_memory"})
    assert records, log.read_text()
    assert count_matching(records, "kvm_set_user_memory", {"guest_memfd": -1}) == len(records)
    assert count_matching(records, "kvm_set_user_memory", {"gpa": 0, "ret": 0}) >= 1
    assert read_trace(log, {"no_such_event"}) == []
