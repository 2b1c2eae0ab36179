"""The pytest plugin: which files it collects, markers from tags, items per engine and QEMU,
statuses and YAML locations in reports, JUnit that validates against junit-10.xsd."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from qmpgmem import hostinfo
from qmpgmem.pytest_plugin.plugin import matches_paths
from qmpgmem.pytest_plugin.variants import version_labels
from qmpgmem.scenario.loader import looks_like_scenario

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[1]
SID_QEMU = REPO / "build" / "qemu-sid" / "qemu-system-x86_64"

GOOD = """\
name: good
description: write and verify
tags: [smoke, fast]
vm:
  memory: [{id: m0, size: 4M}]
steps:
  - action: guest.write
    range: {region: m0, size: 64K}
    seed: 1
  - action: guest.verify
    range: {region: m0, size: 64K}
    expect: {pattern: 1}
"""
BAD = GOOD.replace("name: good", "name: bad").replace("pattern: 1", "pattern: 9")
SNP = GOOD.replace("name: good", "name: snp").replace(
    "tags: [smoke, fast]", "requires: ['vm_type:sev-snp']"
)
#: An error found before QEMU starts: the binary's QMP schema lacks the command.
ERR = """\
name: err
description: a QMP command this QEMU does not have
vm:
  memory: [{id: m0, size: 4M}]
steps:
  - action: qmp
    command: query-status
  - action: qmp
    command: query-no-such-thing
"""
SLOW = """\
name: slow
description: outlives its total timeout
timeouts: {total: 1}
vm:
  memory: [{id: m0, size: 4M}]
steps:
  - action: guest.write
    range: {region: m0, size: 64K}
    seed: 1
  - action: sleep
    seconds: 5
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("--qmpgmem", "-p", "no:cacheprovider", *args)


def accel() -> str:
    return "kvm" if hostinfo.kvm_usable() else "tcg"


def qemu_id(binary: str, suffix: str = "") -> str:
    return f"qemu-{hostinfo.qemu_version(binary) or 'unknown'}{suffix}-{accel()}"


def junit_cases(path: Path) -> dict[str, ET.Element]:
    return {case.get("name", ""): case for case in ET.parse(path).getroot().iter("testcase")}


def suite_properties(path: Path) -> dict[str, str]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return {p.get("name", ""): p.get("value", "") for p in suite.iterfind("properties/property")}


# -- statuses, locations, JUnit (real QEMU) -----------------------------------------------------


@pytest.mark.qemu
@pytest.mark.usefixtures("no_leftovers")  # no QEMU and no run directory stays behind
def test_statuses_point_into_the_yaml_and_junit_validates(
    pytester: pytest.Pytester, qemu_binary: str, junit_xsd: Any
) -> None:
    pytester.makefile(".yaml", good=GOOD, bad=BAD, snp=SNP, err=ERR, slow=SLOW)
    junit = pytester.path / "junit.xml"
    result = run(
        pytester,
        "-rsfE",
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit2",
        "-o",
        "junit_logging=system-out",
    )

    # an error or a timeout is a pytest error, a wrong expectation a failure
    result.assert_outcomes(passed=1, failed=1, skipped=1, errors=2)
    q = qemu_id(qemu_binary)
    result.stdout.fnmatch_lines_random(
        [
            # the failing step's lines, the expectation, and FILE:LINE of the step last
            "step 2 guest.verify: failed (bad.yaml:10)",
            "  12 |     expect: {pattern: 9}",
            "  expected: 0x* (pattern seed 9)",
            "bad.yaml:10: failed: step 2: guest.verify *",
            # the errors at their step: the unknown command, the step the timeout stopped
            "err.yaml:8: error: step 2: QEMU * has no QMP command 'query-no-such-thing'*",
            "slow.yaml:10: timeout: the scenario did not finish within 1 s",
            # short summary: the skip at the scenario's line, not the plugin's source
            "SKIPPED [[]1[]] snp.yaml:1: needs vm_type:sev-snp*",
            f"FAILED bad.yaml::bad[[]{q}[]] - failed: step 2: *",
            f"ERROR err.yaml::err[[]{q}[]] - error: step 2: *",
            f"ERROR slow.yaml::slow[[]{q}[]] - timeout: *",
        ]
    )
    assert "pytest_plugin" not in result.stdout.str()

    junit_xsd.validate(str(junit))  # raises, naming the element, when invalid
    cases = junit_cases(junit)
    assert set(cases) == {f"{n}[{q}]" for n in ("good", "bad", "snp", "err", "slow")}
    failure = cases[f"bad[{q}]"].find("failure")
    assert failure is not None
    # the kept run's tails in the failure text, its files as attachments in <system-out>
    assert "--- last 40 lines of guest serial (serial.log) ---" in (failure.text or "")
    out = cases[f"bad[{q}]"].findtext("system-out") or ""
    assert "[[ATTACHMENT|qmpgmem-artifacts/" in out and "serial.log]]" in out
    for name in ("err", "slow"):
        assert cases[f"{name}[{q}]"].find("error") is not None
        assert cases[f"{name}[{q}]"].find("failure") is None
    skipped = cases[f"snp[{q}]"].find("skipped")
    assert skipped is not None
    assert skipped.get("message", "").startswith("needs vm_type:sev-snp")
    assert (skipped.text or "").startswith("snp.yaml:1: needs vm_type:sev-snp")
    assert all(case.find("properties") is None for case in cases.values())

    props = suite_properties(junit)
    assert props["qmpgmem.host.kvm_backend"] == (hostinfo.kvm_backend() or "none")
    assert props["qmpgmem.host.qemu_binary"] == qemu_binary
    assert props["qmpgmem.host.engine"] == "qemu"
    assert props["qmpgmem.tags.good"] == "smoke,fast"
    assert props["qmpgmem.tags.bad"] == "smoke,fast"
    assert all(isinstance(v, str) for v in props.values())


@pytest.mark.qemu
def test_junit_of_the_default_family_validates(
    pytester: pytest.Pytester, qemu_binary: str, junit_xsd: Any
) -> None:
    # skip and error are decided before any VM starts: quick
    pytester.makefile(".yaml", snp=SNP, err=ERR)
    junit = pytester.path / "junit.xml"
    result = run(pytester, f"--junitxml={junit}")
    result.assert_outcomes(skipped=1, errors=1)
    junit_xsd.validate(str(junit))
    assert "qmpgmem.host.kernel_release" in suite_properties(junit)


def test_the_schema_rejects_per_test_properties(pytester: pytest.Pytester, junit_xsd: Any) -> None:
    """Why the plugin writes testsuite properties only: pytest puts record_property into
    each <testcase>, and junit-10.xsd (xunit2) refuses that."""
    pytester.makepyfile("def test_x(record_property):\n    record_property('status', 'passed')\n")
    junit = pytester.path / "junit.xml"
    pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--junitxml={junit}")
    assert ET.parse(junit).getroot().find(".//testcase/properties") is not None
    assert not junit_xsd.is_valid(str(junit))


# -- engines and QEMU binaries ------------------------------------------------------------------


@pytest.mark.qemu
def test_items_per_engine_and_qemu_binary(
    pytester: pytest.Pytester, qemu_binary: str, tmp_path: Path
) -> None:
    pytester.makefile(".yaml", good=GOOD)
    same = tmp_path / "qemu-again"
    same.symlink_to(qemu_binary)  # another binary of the same version
    qemus = [qemu_binary, str(same)]
    if SID_QEMU.exists():
        qemus.append(str(SID_QEMU))
    args = [f"--qmpgmem-qemu={q}" for q in qemus]
    result = run(
        pytester, "--collect-only", "-q", "--qmpgmem-engine=qemu", "--qmpgmem-engine=kvm", *args
    )
    expected = [f"good.yaml::good[[]{qemu_id(qemu_binary)}[]]"]
    expected.append(f"good.yaml::good[[]{qemu_id(qemu_binary, '-2')}[]]")
    if SID_QEMU.exists():
        expected.append(f"good.yaml::good[[]{qemu_id(str(SID_QEMU))}[]]")
    expected.append("good.yaml::good[[]kvm[]]")
    result.stdout.fnmatch_lines([*expected, f"{len(expected)} tests collected*"])

    tcg = run(pytester, "--collect-only", "-q", "--qmpgmem-accel=tcg")
    version = hostinfo.qemu_version(qemu_binary)
    tcg.stdout.fnmatch_lines([f"good.yaml::good[[]qemu-{version}-tcg[]]"])


def test_an_unknown_qemu_binary_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", good=GOOD)
    result = run(pytester, "--qmpgmem-qemu=/nonexistent/qemu")
    result.stderr.fnmatch_lines(["*--qmpgmem-qemu /nonexistent/qemu: no such executable*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


@pytest.mark.qemu
def test_both_engines_run(pytester: pytest.Pytester, qemu_binary: str, kvm_available: None) -> None:
    pytester.makefile(".yaml", good=GOOD)
    result = run(pytester, "-v", "--qmpgmem-engine", "qemu", "--qmpgmem-engine", "kvm")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines_random(
        [f"good.yaml::good[[]{qemu_id(qemu_binary)}[]] PASSED*", "good.yaml::good[[]kvm[]] PASSED*"]
    )


@pytest.mark.qemu
@pytest.mark.usefixtures("no_leftovers")
def test_under_xdist_the_controllers_junit_has_the_workers_properties(
    pytester: pytest.Pytester, qemu_binary: str, junit_xsd: Any
) -> None:
    other = GOOD.replace("name: good", "name: other").replace("[smoke, fast]", "[other]")
    pytester.makefile(".yaml", good=GOOD, bad=BAD, snp=SNP, other=other)
    junit = pytester.path / "junit.xml"
    result = run(pytester, "-n", "2", "--dist", "load", f"--junitxml={junit}", "-rs")
    result.assert_outcomes(passed=2, failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*2 workers*"])
    junit_xsd.validate(str(junit))
    q = qemu_id(qemu_binary)
    assert set(junit_cases(junit)) == {f"{n}[{q}]" for n in ("good", "bad", "snp", "other")}
    # the items ran in the workers, the controller wrote the file: the host and every
    # scenario's tags came from the workers, whichever ran which
    props = suite_properties(junit)
    assert props["qmpgmem.host.kvm_backend"] == (hostinfo.kvm_backend() or "none")
    assert props["qmpgmem.host.qemu_binary"] == qemu_binary
    assert props["qmpgmem.tags.good"] == "smoke,fast"
    assert props["qmpgmem.tags.other"] == "other"


def test_merged_properties_take_one_host_and_every_tag() -> None:
    from qmpgmem.pytest_plugin.plugin import merged_properties

    merged = merged_properties(
        [
            [("qmpgmem.host.kernel_release", "6.1"), ("qmpgmem.tags.b", "x")],
            [("qmpgmem.host.kernel_release", "6.1"), ("qmpgmem.tags.a", "y,z")],
        ]
    )
    assert merged == [
        ("qmpgmem.host.kernel_release", "6.1"),
        ("qmpgmem.tags.a", "y,z"),
        ("qmpgmem.tags.b", "x"),
    ]


def test_version_labels_tell_binaries_apart() -> None:
    labels = version_labels(
        ["/a", "/b", "/c", "/d"], {"/a": "10.0.2", "/b": "10.0.2", "/c": None, "/d": "11.1 rc"}
    )
    assert labels == {"/a": "10.0.2", "/b": "10.0.2-2", "/c": "unknown", "/d": "11.1_rc"}


# -- which files are collected ------------------------------------------------------------------


def test_unrelated_yaml_and_json_are_left_alone(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", good=GOOD)
    data = pytester.mkdir("tests").joinpath("data")
    data.mkdir()
    (data / "config.yaml").write_text("name: app\nlevel: 3\n")
    (data / "hosts.yml").write_text("- alpha\n- beta\n")
    (data / "values.json").write_text('{"name": "x", "items": [1, 2]}')
    (data / "chart.yaml").write_text("name: {{ .Chart }}\n  bad: [\n")  # not even YAML
    (data / "empty.yaml").write_text("")
    result = run(pytester, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["good.yaml::good[[]*[]]", "1 test collected*"])
    assert result.ret == pytest.ExitCode.OK

    # named on the command line, a file is loaded, and says why it is no scenario
    named = run(pytester, "--collect-only", "-q", "tests/data/config.yaml")
    named.stdout.fnmatch_lines(["tests/data/config.yaml:2:1: level: unknown key 'level'*"])
    assert named.ret == pytest.ExitCode.INTERRUPTED


def test_ini_paths_restrict_collection(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nqmpgmem_paths = scenarios extra/*.scenario.yaml\n")
    pytester.mkdir("scenarios")
    pytester.mkdir("extra")
    (pytester.path / "scenarios" / "good.yaml").write_text(GOOD)
    (pytester.path / "extra" / "b.scenario.yaml").write_text(BAD)
    (pytester.path / "extra" / "snp.yaml").write_text(SNP)  # a scenario, but not selected
    (pytester.path / "loose.yaml").write_text(ERR)
    result = run(pytester, "--collect-only", "-q")
    result.stdout.fnmatch_lines_random(
        ["scenarios/good.yaml::good[[]*", "extra/b.scenario.yaml::bad[[]*"]
    )
    result.stdout.fnmatch_lines(["2 tests collected*"])


def test_a_scenario_with_a_mistake_still_fails_collection(pytester: pytest.Pytester) -> None:
    # looks like a scenario (name, vm, steps) though description is missing: not left alone
    pytester.makefile(".yaml", broken=GOOD.replace("description: write and verify\n", ""))
    result = run(pytester, "--collect-only", "-q")
    result.stdout.fnmatch_lines(["broken.yaml:1:1: description: missing required key*"])
    assert result.ret == pytest.ExitCode.INTERRUPTED


def test_invalid_file_fails_collection_with_line(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", broken=GOOD.replace("size: 64K}\n    seed", "size: lots}\n    seed"))
    result = run(pytester)
    result.stdout.fnmatch_lines(["broken.yaml:8:*steps[[]0[]].range.size*"])
    assert result.ret != 0


def test_plugin_is_off_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", good=GOOD)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes()
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED


@pytest.mark.parametrize(
    ("text", "suffix", "expected"),
    [
        (GOOD, ".yaml", True),
        (GOOD.replace("description: write and verify\n", ""), ".yaml", True),
        (GOOD + "  - [unclosed\n", ".yaml", True),  # a syntax error: judged by its lines
        ('{"name": "j", "vm": {}, "steps": []}', ".json", True),
        ('{"name": "j", "steps": [', ".json", True),
        ("name: app\nlevel: 3\n", ".yaml", False),
        ("name: app\ndescription: a package\n", ".yaml", False),  # no vm, no steps
        ("steps: [build, test]\n", ".yaml", False),  # one key only
        ("- name: a\n  steps: []\n", ".yaml", False),  # not a mapping
        ('{"name": "x", "items": [1]}', ".json", False),
        ("", ".yaml", False),
        ("name: {{ .Chart }}\n  bad: [\n", ".yaml", False),
    ],
)
def test_looks_like_scenario(tmp_path: Path, text: str, suffix: str, expected: bool) -> None:
    path = tmp_path / f"f{suffix}"
    path.write_text(text)
    assert looks_like_scenario(path) is expected


def test_looks_like_scenario_never_raises(tmp_path: Path) -> None:
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\nvm: {}\nsteps: []\n")
    (tmp_path / "big.yaml").write_text(GOOD + "#" * (1 << 20))
    assert not looks_like_scenario(tmp_path / "latin1.yaml")
    assert not looks_like_scenario(tmp_path / "big.yaml")
    assert not looks_like_scenario(tmp_path / "missing.yaml")
    assert not looks_like_scenario(tmp_path)


@pytest.mark.parametrize(
    ("rel", "patterns", "expected"),
    [
        ("scenarios/basic/smoke.yaml", ["scenarios"], True),
        ("scenarios/basic/smoke.yaml", ["scenarios/"], True),
        ("scenarios/basic/smoke.yaml", ["scenarios/basic/*.yaml"], True),
        ("scenarios/smoke.yaml", ["scenarios/**/*.yaml"], True),
        ("scenarios/a/b/smoke.yaml", ["scenarios/**/*.yaml"], True),
        ("tests/data/smoke.scenario.yaml", ["*.scenario.yaml"], True),
        ("tests/data/config.yaml", ["scenarios", "*.scenario.yaml"], False),
        ("scenarios2/x.yaml", ["scenarios"], False),
        ("other/scenarios.yaml", ["scenarios/*"], False),
    ],
)
def test_matches_paths(tmp_path: Path, rel: str, patterns: list[str], expected: bool) -> None:
    assert matches_paths(tmp_path / rel, tmp_path, patterns) is expected


def test_matches_paths_takes_absolute_patterns(tmp_path: Path) -> None:
    path = tmp_path / "lib" / "x.yaml"
    assert matches_paths(path, Path("/elsewhere"), [os.fspath(tmp_path / "lib")])
    assert not matches_paths(path, Path("/elsewhere"), [os.fspath(tmp_path / "other")])


# -- tags become markers ------------------------------------------------------------------------


def test_tags_are_markers(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", good=GOOD, bad=BAD, snp=SNP)
    smoke = run(pytester, "--collect-only", "-q", "--strict-markers", "-m", "smoke")
    smoke.stdout.fnmatch_lines_random(["good.yaml::good[[]*", "bad.yaml::bad[[]*"])
    smoke.stdout.fnmatch_lines(["2/3 tests collected (1 deselected)*"])
    assert smoke.ret == pytest.ExitCode.OK

    others = run(pytester, "--collect-only", "-q", "--strict-markers", "-m", "not fast")
    others.stdout.fnmatch_lines(["snp.yaml::snp[[]*", "1/3 tests collected (2 deselected)*"])


def test_a_tag_pytest_acts_on_is_no_marker(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", good=GOOD.replace("[smoke, fast]", "[skip, _hidden, smoke]"))
    result = run(pytester, "--collect-only", "-q", "--strict-markers", "-m", "skip or smoke")
    result.stdout.fnmatch_lines_random(
        [
            "*good.yaml:3: PytestWarning: qmpgmem: tag 'skip' is not a marker: *acts on*",
            "*good.yaml:3: PytestWarning: qmpgmem: tag '_hidden' is not a marker*",
            "1 test collected*",  # by smoke
        ]
    )
    none = run(pytester, "--collect-only", "-q", "-m", "skip")
    none.stdout.fnmatch_lines(["*1 deselected*"])
