"""kselftest output as results: exit status decides, TAP lines become steps."""

from __future__ import annotations

from qmpgmem.lab.tap import parse_tap, verdict
from qmpgmem.report.result import Status

HARNESS = """\
TAP version 13
1..4
# Starting 4 tests from 1 test cases.
ok 1 guest_memfd.file_read_write
not ok 2 guest_memfd.mmap_supported
#  guest_memfd_test.c:120:mmap_supported:Expected errno (19) == ENODEV (22)
ok 3 guest_memfd.numa # SKIP needs two NUMA nodes
ok 4 guest_memfd.xfail_case # XFAIL known
  ok 1 nested line that belongs to its parent
# Totals: pass:2 fail:1 xfail:1 xpass:0 skip:1 error:0
"""


def test_harness_lines_statuses_and_totals() -> None:
    tap = parse_tap(HARNESS)
    assert tap.planned == 4
    assert [(t.number, t.status) for t in tap.tests] == [
        (1, Status.PASSED), (2, Status.FAILED), (3, Status.SKIPPED), (4, Status.PASSED),
    ]  # fmt: skip
    assert tap.tests[2].directive == "SKIP needs two NUMA nodes"
    assert tap.totals["fail"] == 1 and tap.totals["skip"] == 1


def test_failed_line_fails_even_with_exit_zero() -> None:
    status, reason = verdict(0, parse_tap(HARNESS))
    assert status is Status.FAILED
    assert "guest_memfd.mmap_supported" in reason


def test_exit_status_speaks_for_tests_without_tap_lines() -> None:
    plain = "Random seed: 0x6b8b4567\n"
    assert verdict(0, parse_tap(plain)) == (Status.PASSED, "")
    status, reason = verdict(1, parse_tap(plain + "==== Test Assertion Failure ====\n"))
    assert status is Status.FAILED and "exit status 1" in reason
    assert "Test Assertion Failure" in reason


def test_skip_and_timeout() -> None:
    status, reason = verdict(4, parse_tap("1..0 # SKIP\n# KVM_CAP_VM_TYPES not supported\n"))
    assert status is Status.SKIPPED and "KVM_CAP_VM_TYPES" in reason
    assert verdict(124, parse_tap(""))[0] is Status.TIMEOUT
