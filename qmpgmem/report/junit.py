"""JUnit XML for CI systems: one testsuite per run, one testcase per scenario and engine.

Why this shape: it validates against the schema Jenkins' xunit plugin uses (junit-10.xsd), which
GitLab and GitHub Actions reporters read too. So only ``name``/``classname``/``time`` on a
testcase; what else a reader needs goes into ``<system-out>``: tags, accelerator, steps, the
serial and QMP tails of a run that did not pass, and one ``[[ATTACHMENT|path]]`` line per kept
file (Jenkins' attachments convention). A skip's reason is the element's text as well as its
``message`` (GitLab shows the text). A timeout is an error with the word in its message, so it
is not mistaken for a wrong expectation. Paths are relative to the working directory.

A testcase is named by the result's id (scenario, engine, QEMU binary and version, the lab's
kernel), so the runs of one scenario on two binaries (``run --matrix``) are two testcases. A
``flaky`` result (``run --repeat N``, its runs ended differently) is a ``<failure
type="flaky">``: a job that asked for repeats to find flakes must go red in every reader, and
junit-10.xsd has no other place for it; the message says which statuses the runs ended in,
``<system-out>`` each run's status and the min/median/max time.
"""

from __future__ import annotations

import datetime
import os
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from qmpgmem.report.envelope import write_text_atomic
from qmpgmem.report.result import HostInfo, RunReport, ScenarioResult, Status

__all__ = ["artifacts_text", "junit_xml", "relative", "testsuite", "write_junit", "xml_text"]

#: lines of each log kept in <system-out> for a run that did not pass
TAIL_LINES = 40
#: the files a kept run directory holds, in the order a reader wants them
_TAILS = (("serial.log", "guest serial"), ("qmp.jsonl", "QMP"), ("qemu.log", "QEMU output"))
# characters XML 1.0 cannot carry (a guest may print anything on its serial line)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: str) -> str:
    return _NOT_XML.sub("\ufffd", value)


def relative(path: str | None, base: Path | None = None) -> str:
    """``path`` relative to ``base`` (default: the working directory) when it is below it."""
    if not path:
        return ""
    root = (base or Path.cwd()).resolve()
    try:
        return str(Path(path).resolve().relative_to(root))
    except (ValueError, OSError):
        return path


def _tail(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


def _system_out(r: ScenarioResult, base: Path | None) -> str:
    out = []
    if r.tags:
        out.append(f"tags: {', '.join(r.tags)}")
    note = f" ({r.accel_note})" if r.accel_note else ""
    out.append(f"engine: {r.engine}, accel: {r.accel or '?'}{note}")
    if r.qemu:
        out.append(f"qemu: {relative(r.qemu, base)} {r.qemu_version or '?'}")
    if r.kernel:
        out.append(f"kernel: {r.kernel}")
    if r.repeats is not None:
        out.append(f"runs: {', '.join(map(str, r.repeats.statuses))}")
        out.append(f"times: {r.repeats.spread()}")
    out.append(f"file: {relative(r.file, base)}")
    out += [f"step {st.index} {st.action} [{st.status}] {st.message}".rstrip() for st in r.steps]
    out += [f"warning: {w}" for w in r.warnings]
    if r.artifacts:
        out.append(artifacts_text(r, base))
    return xml_text("\n".join(out))


def artifacts_text(r: ScenarioResult, base: Path | None = None) -> str:
    """What a kept run directory tells a CI reader: where it is, the reproducer, the tails of
    the serial log, QMP transcript and QEMU output, one ``[[ATTACHMENT|path]]`` per file.
    Shared with the pytest plugin; "" when nothing was kept."""
    if not r.artifacts:
        return ""
    art = Path(r.artifacts)
    out = [f"artifacts: {relative(r.artifacts, base)}"]
    if r.reproduce:
        out.append(f"reproduce: {r.reproduce}")
    for name, label in _TAILS:
        tail = _tail(art / name)
        if tail:
            out.append(f"--- last {TAIL_LINES} lines of {label} ({name}) ---\n{tail}")
    if art.is_dir():
        out += [
            f"[[ATTACHMENT|{relative(str(p), base)}]]" for p in sorted(art.iterdir()) if p.is_file()
        ]
    return xml_text("\n".join(out))


def _testcase(parent: ET.Element, suite: str, r: ScenarioResult, base: Path | None) -> None:
    group = Path(r.file).parent.name or "scenarios"
    case = ET.SubElement(
        parent,
        "testcase",
        classname=f"{suite}.{r.engine}.{group}",
        name=xml_text(r.id or r.scenario),
        time=f"{r.duration_s:.3f}",
    )
    reason = xml_text(r.reason)
    if r.status in (Status.FAILED, Status.FLAKY):
        kind = str(r.status)
        ET.SubElement(case, "failure", type=kind, message=reason).text = reason
    elif r.status in (Status.ERROR, Status.TIMEOUT):
        kind = str(r.status)
        ET.SubElement(case, "error", type=kind, message=f"{kind}: {reason}").text = reason
    elif r.status in (Status.SKIPPED, Status.WOULD_SKIP):
        ET.SubElement(case, "skipped", type=str(r.status), message=reason).text = reason
    ET.SubElement(case, "system-out").text = _system_out(r, base)


def testsuite(
    name: str,
    *,
    tests: int,
    failures: int,
    errors: int,
    skipped: int,
    seconds: float,
    host: HostInfo,
    created: datetime.datetime | None = None,
) -> tuple[ET.Element, ET.Element]:
    """A ``<testsuite>`` as every qmpgmem JUnit file starts (run, kernel-contract): counts,
    timestamp (``created``, default now) and hostname, the host fingerprint as ``host.*``
    properties. Returns the suite and its ``<properties>``, for more properties."""
    when = created or datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    suite = ET.Element(
        "testsuite",
        name=name,
        tests=str(tests),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{seconds:.3f}",
        timestamp=when.isoformat(),
        hostname=socket.gethostname(),
    )
    props = ET.SubElement(suite, "properties")
    for key, value in host.properties().items():
        ET.SubElement(props, "property", name=f"host.{key}", value=xml_text(value))
    return suite, props


def junit_xml(report: RunReport, suite_name: str = "qmpgmem", base: Path | None = None) -> str:
    s = report.summary
    gate_failed = report.gate is not None and not report.gate.passed
    suite, props = testsuite(
        suite_name,
        tests=len(report.results) + (report.gate is not None),
        failures=s.failed + s.flaky + gate_failed,
        errors=s.errors + s.timeouts,
        skipped=s.skipped + s.would_skip,
        seconds=sum(r.duration_s for r in report.results),
        host=report.host,
    )
    if report.interrupted:
        ET.SubElement(props, "property", name="interrupted", value=report.interrupted)
    for r in report.results:
        _testcase(suite, suite_name, r, base)
    if report.gate is not None:
        gate = report.gate
        case = ET.SubElement(
            suite, "testcase", classname=f"{suite_name}.gate", name="strict", time="0.000"
        )
        lines = [gate.verdict] + [f"{v.scenario} [{v.engine}]: {v.why}" for v in gate.violations]
        if not gate.passed:
            ET.SubElement(
                case, "failure", type="strict", message=xml_text(gate.verdict)
            ).text = xml_text("\n".join(lines))
        ET.SubElement(case, "system-out").text = xml_text(
            "\n".join(lines + [f"expected skip unused: {u}" for u in gate.unused_expected_skips])
        )
    if report.interrupted:
        ET.SubElement(
            suite, "system-err"
        ).text = f"run interrupted ({report.interrupted}): {len(report.results)} results so far"
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(report: RunReport, path: Path) -> None:
    """Write atomically, so a reader (or a kill) never sees half a file."""
    write_text_atomic(path, junit_xml(report))
