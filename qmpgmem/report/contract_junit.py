"""JUnit XML of a kernel-contract run: one testsuite, one testcase per check.

The conventions of :mod:`qmpgmem.report.junit` (valid against junit-10.xsd, the host
fingerprint as ``host.*`` properties of the suite, a skip's reason as its message and its
text, text XML 1.0 can carry). JUnit knows no ``deviation``: a deviation is a testcase that
passed, whose ``<system-out>`` starts with ``deviation (KEY): …`` — the recorded reason and what
was observed — so a CI reader sees it without the run being red. A failure's message is the
mismatch. Every testcase's ``<system-out>`` also carries the upstream expectation and its source.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from qmpgmem.report.envelope import ContractDocument, write_text_atomic
from qmpgmem.report.junit import testsuite, xml_text

__all__ = ["contract_junit_xml", "write_contract_junit"]

SUITE: str = "kernel-contract"


def contract_junit_xml(doc: ContractDocument, durations: dict[str, float] | None = None) -> str:
    """The document as JUnit XML; ``durations`` (check name → seconds) fill in ``time``."""
    times = durations or {}
    c = doc.counts
    suite, props = testsuite(
        SUITE,
        tests=len(doc.checks),
        failures=c.failed,
        errors=0,
        skipped=c.skipped,
        seconds=sum(times.get(r.name, 0.0) for r in doc.checks),
        host=doc.host,
        created=doc.created,
    )
    for name, value in c.model_dump().items():
        ET.SubElement(props, "property", name=f"counts.{name}", value=str(value))
    for r in doc.checks:
        area = r.name.split(".", 1)[0]
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{SUITE}.{area}",
            name=xml_text(r.name),
            time=f"{times.get(r.name, 0.0):.3f}",
        )
        detail = xml_text(r.detail)
        out = [f"expectation: {r.expectation}", f"source: {r.source}", f"backend: {r.backend}"]
        if r.outcome == "failed":
            ET.SubElement(case, "failure", type="failed", message=detail).text = detail
        elif r.outcome == "skipped":
            ET.SubElement(case, "skipped", type="skipped", message=detail).text = detail
        elif r.outcome == "deviation":
            out.insert(0, f"deviation: {detail}")
        elif r.detail:
            out.append(f"note: {r.detail}")
        ET.SubElement(case, "system-out").text = xml_text("\n".join(out))
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_contract_junit(
    doc: ContractDocument, path: Path, durations: dict[str, float] | None = None
) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    write_text_atomic(path, contract_junit_xml(doc, durations))
