"""JUnit XML for CI systems: one testsuite per run, one testcase per scenario.

Why these mappings: CI dashboards understand failure, error and skipped; a timeout is an error
with the word in its message, so it is not mistaken for a wrong expectation.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from qmpgmem.report.result import RunReport, Status


def junit_xml(report: RunReport, suite_name: str = "qmpgmem") -> str:
    s = report.summary
    suite = ET.Element(
        "testsuite",
        name=suite_name,
        tests=str(len(report.results)),
        failures=str(s.failed),
        errors=str(s.errors + s.timeouts),
        skipped=str(s.skipped),
        time=f"{sum(r.duration_s for r in report.results):.3f}",
    )
    props = ET.SubElement(suite, "properties")
    for key, value in report.host.model_dump().items():
        ET.SubElement(props, "property", name=key, value=str(value))
    for r in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"{suite_name}.{r.engine}.{Path(r.file).parent.name or 'scenarios'}",
            name=r.scenario,
            file=r.file,
            time=f"{r.duration_s:.3f}",
        )
        detail = "\n".join(
            f"step {st.index} {st.action} [{st.status}] {st.message}".rstrip() for st in r.steps
        )
        if r.artifacts:
            detail += f"\nartifacts: {r.artifacts}\nreproduce: {r.reproduce}"
        if r.status is Status.FAILED:
            ET.SubElement(case, "failure", message=r.reason).text = detail
        elif r.status in (Status.ERROR, Status.TIMEOUT):
            ET.SubElement(case, "error", message=f"{r.status}: {r.reason}").text = detail
        elif r.status is Status.SKIPPED:
            ET.SubElement(case, "skipped", message=r.reason)
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(report: RunReport, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit_xml(report))
