"""The pytest plugin: scenario files as items, skips with reasons, failures with YAML lines."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]
pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary")]

GOOD = """\
name: good
description: write and verify
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


def test_items_pass_fail_and_skip(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", good=GOOD)
    pytester.makefile(".yaml", bad=GOOD.replace("good", "bad").replace("pattern: 1", "pattern: 9"))
    pytester.makefile(
        ".yaml",
        needs_snp=GOOD.replace("name: good", "name: snp\nrequires: ['vm_type:sev-snp']"),
    )
    result = pytester.runpytest_subprocess("--qmpgmem", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "*bad.yaml:9*",
            "*expect: {pattern: 9}*",
            "*expected: 0x* (pattern seed 9)*",
            "SKIPPED*needs vm_type:sev-snp*",
        ]
    )


def test_invalid_file_fails_collection_with_line(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", broken=GOOD.replace("size: 64K}\n    seed", "size: lots}\n    seed"))
    result = pytester.runpytest_subprocess("--qmpgmem", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*broken.yaml:7:*steps[[]0[]].range.size*"])
    assert result.ret != 0


def test_plugin_is_off_without_the_option(pytester: pytest.Pytester) -> None:
    pytester.makefile(".yaml", good=GOOD)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes()
