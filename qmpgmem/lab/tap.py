"""The kernel selftests' output (TAP, as kselftest prints it) and exit status as results.

Why both: harness-based selftests (guest_memfd_test) print one ``ok``/``not ok`` line per
test; older ones (private_mem_conversions_test) print no test lines at all and speak through
their exit status — 0 pass, 4 KSFT_SKIP, anything else a failure (kselftest.h). A selftest
is therefore judged by its exit status, and its TAP lines become its steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from qmpgmem.report.result import Status

__all__ = ["KSFT_FAIL", "KSFT_PASS", "KSFT_SKIP", "TapLine", "TapResult", "parse_tap", "verdict"]

KSFT_PASS: Final = 0
KSFT_FAIL: Final = 1
KSFT_SKIP: Final = 4
#: what timeout(1) returns when it had to stop the selftest
TIMEOUT_EXIT: Final = 124

_RESULT: Final = re.compile(
    r"^(?P<ok>ok|not ok)\s+(?P<num>\d+)\s*(?:-\s*)?(?P<desc>[^#]*?)\s*(?:#\s*(?P<directive>.*))?$"
)
_PLAN: Final = re.compile(r"^1\.\.(\d+)")
_TOTALS: Final = re.compile(r"^# Totals: (.*)$")


@dataclass(frozen=True)
class TapLine:
    number: int
    description: str
    status: Status
    directive: str = ""  # "SKIP reason", "XFAIL ..."


@dataclass
class TapResult:
    tests: list[TapLine] = field(default_factory=list)
    planned: int | None = None
    totals: dict[str, int] = field(default_factory=dict)
    #: the last diagnostic lines ('# ...' and unprefixed), for the reason of a failure
    diagnostics: list[str] = field(default_factory=list)


def parse_tap(text: str) -> TapResult:
    """Every ``ok``/``not ok`` line at the top nesting level, the plan and kselftest's totals."""
    result = TapResult()
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith((" ", "\t")):
            continue  # nested subtests belong to their parent line
        if plan := _PLAN.match(line):
            result.planned = int(plan.group(1))
        elif totals := _TOTALS.match(line):
            for item in totals.group(1).split():
                key, _, value = item.partition(":")
                if value.isdigit():
                    result.totals[key] = int(value)
        elif match := _RESULT.match(line):
            directive = (match.group("directive") or "").strip()
            passed = match.group("ok") == "ok"
            if directive.upper().startswith("SKIP"):
                status = Status.SKIPPED
            elif directive.upper().startswith("XFAIL"):
                status = Status.PASSED  # an expected failure is kselftest's way of passing
            else:
                status = Status.PASSED if passed else Status.FAILED
            desc = match.group("desc").strip() or f"test {match.group('num')}"
            result.tests.append(TapLine(int(match.group("num")), desc, status, directive))
        elif line and not line.startswith("TAP version"):
            result.diagnostics = [*result.diagnostics[-19:], line.lstrip("# ")]
    return result


def verdict(exit_status: int, tap: TapResult) -> tuple[Status, str]:
    """The selftest's status and a one-line reason, from its exit status first."""
    failed = [t for t in tap.tests if t.status is Status.FAILED]
    if exit_status == TIMEOUT_EXIT:
        return Status.TIMEOUT, "the selftest did not finish in time"
    if exit_status == KSFT_SKIP:
        reason = next((t.directive for t in tap.tests if t.status is Status.SKIPPED), "")
        last = tap.diagnostics[-1] if tap.diagnostics else ""
        return Status.SKIPPED, reason.removeprefix("SKIP").strip() or last or "KSFT_SKIP"
    if exit_status == KSFT_PASS and not failed:
        return Status.PASSED, ""
    if failed:
        names = ", ".join(t.description for t in failed[:3])
        return Status.FAILED, f"{len(failed)} failed: {names}"
    last = tap.diagnostics[-1] if tap.diagnostics else "no output"
    return Status.FAILED, f"exit status {exit_status}: {last}"
