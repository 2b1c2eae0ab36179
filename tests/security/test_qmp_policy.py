"""Which QMP commands reach the host: the live binary's ``query-qmp-schema`` walked by the
rule of qmpgmem/host/qmp_policy.py (docs/security.md), on QEMU 10.0.2 and, when present,
the private 11.x build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qmpgmem.host.qmp_policy import QmpPolicy, Reach, judge_without_schema

pytestmark = [pytest.mark.qemu, pytest.mark.usefixtures("qemu_binary")]

SID_QEMU = Path(__file__).resolve().parents[2] / "build" / "qemu-sid" / "qemu-system-x86_64"
BINARIES = ["/usr/bin/qemu-system-x86_64"] + ([str(SID_QEMU)] if SID_QEMU.exists() else [])

#: The commands issue 13 names, and others that reach the host by their arguments.
UNSAFE = [
    "migrate", "migrate-incoming", "human-monitor-command", "pmemsave", "memsave",
    "dump-guest-memory", "screendump", "add-fd", "getfd", "blockdev-add", "object-add",
    "chardev-add", "device_add", "netdev_add", "qom-set", "drive-mirror", "blockdev-create",
]  # fmt: skip
SAFE = ["query-status", "query-memdev", "cont", "stop", "system_reset", "qom-get", "query-name"]


@pytest.fixture(scope="module", params=BINARIES, ids=lambda b: Path(b).parent.name)
def policy(request: pytest.FixtureRequest) -> QmpPolicy:
    import asyncio

    from qmpgmem.host.qemu import probe_qemu

    facts = asyncio.run(probe_qemu(request.param))
    found = facts.qmp_policy()
    assert found is not None
    return found


def test_the_schema_classifies_the_commands_issue_13_names(policy: QmpPolicy) -> None:
    unsafe = policy.unsafe_commands()
    assert [c for c in UNSAFE if c not in unsafe] == []
    assert [c for c in SAFE if c in unsafe] == []


def _reaches(policy: QmpPolicy, command: str, args: dict[str, Any]) -> set[Reach]:
    found = {f.reach for f in policy.judge(command, args)}
    # the schema-free tables of validate are at least as strict
    assert found <= {f.reach for f in judge_without_schema(command, args)}, command
    return found


@pytest.mark.parametrize(
    ("command", "args", "reaches"),
    [
        ("migrate", {"uri": "exec:touch /tmp/x"}, {Reach.URI}),
        ("migrate", {"uri": "fd:3"}, {Reach.URI}),
        ("migrate", {"uri": "file:/etc/x"}, {Reach.URI}),
        ("migrate", {"uri": "file:state.bin"}, set()),
        (
            "migrate",
            {"channels": [{"channel-type": "main",
                           "addr": {"transport": "exec", "args": ["sh", "-c", "id"]}}]},
            {Reach.PROGRAM},
        ),
        ("human-monitor-command", {"command-line": "info status"}, {Reach.PROGRAM}),
        ("pmemsave", {"val": 0, "size": 4096, "filename": "/tmp/x"}, {Reach.PATH}),
        ("pmemsave", {"val": 0, "size": 4096, "filename": "../x"}, {Reach.PATH}),
        ("pmemsave", {"val": 0, "size": 4096, "filename": "mem.bin"}, set()),
        ("dump-guest-memory", {"paging": False, "protocol": "file:/tmp/d"}, {Reach.URI}),
        ("dump-guest-memory", {"paging": False, "protocol": "file:dump.elf"}, set()),
        ("screendump", {"filename": "/tmp/s.ppm"}, {Reach.PATH}),
        ("getfd", {"fdname": "x"}, {Reach.FD}),
        ("add-fd", {}, {Reach.FD}),
        ("blockdev-add", {"driver": "null-co", "node-name": "n0"}, set()),
        ("blockdev-add", {"driver": "file", "node-name": "f", "filename": "/etc/passwd"},
         {Reach.PATH}),
        ("blockdev-add", {"driver": "nvme", "node-name": "n", "device": "0000:01:00.0",
                          "namespace": 1}, {Reach.DEVICE, Reach.PATH}),
        ("blockdev-add", {"driver": "raw", "node-name": "r",
                          "file": {"driver": "file", "filename": "/etc/shadow"}}, {Reach.PATH}),
        ("object-add", {"qom-type": "memory-backend-ram", "id": "r", "size": 4096}, set()),
        ("object-add", {"qom-type": "memory-backend-file", "id": "f", "size": 4096,
                        "mem-path": "/dev/shm/x"}, {Reach.PATH}),
        ("chardev-add", {"id": "c", "backend": {"type": "file", "data": {"out": "c.log"}}},
         set()),
        ("chardev-add", {"id": "c", "backend": {"type": "file", "data": {"out": "/tmp/c"}}},
         {Reach.PATH}),
        ("chardev-add", {"id": "c", "backend": {"type": "socket", "data": {
            "addr": {"type": "inet", "data": {"host": "0.0.0.0", "port": "4444"}},
            "server": True, "wait": False}}}, {Reach.NETWORK}),
        ("device_add", {"driver": "loader", "file": "/etc/passwd"}, {Reach.OPAQUE}),
        ("netdev_add", {"type": "tap", "id": "n"}, {Reach.NETWORK}),
        ("qom-set", {"path": "/machine", "property": "x", "value": 1}, {Reach.OPAQUE}),
        ("qom-get", {"path": "/machine", "property": "type"}, set()),
        ("query-status", {}, set()),
    ],
)  # fmt: skip
def test_a_step_is_judged_on_the_arguments_it_gives(
    policy: QmpPolicy, command: str, args: dict[str, Any], reaches: set[Reach]
) -> None:
    assert _reaches(policy, command, args) == reaches


def test_new_commands_are_classified_by_the_same_rule() -> None:
    """QEMU 11 added migrate-set-parameters' cpr-exec-command (a program to exec): nobody
    listed it, the schema says so."""
    if not SID_QEMU.exists():
        pytest.skip(f"needs QEMU 11 at {SID_QEMU} (make sid-qemu)")
    import asyncio

    from qmpgmem.host.qemu import probe_qemu

    policy = asyncio.run(probe_qemu(str(SID_QEMU))).qmp_policy()
    assert policy is not None
    assert "migrate-set-parameters" in policy.unsafe_commands()
    args = {"cpr-exec-command": ["sh", "-c", "id"]}
    assert {f.reach for f in policy.judge("migrate-set-parameters", args)} == {Reach.PROGRAM}
    assert policy.judge("migrate-set-parameters", {"downtime-limit": 300}) == []


def test_docs_list_the_commands_the_rule_computes() -> None:
    """docs/security.md quotes the list for QEMU 10.0.2 and 11.1.3; it must be the one the
    rule computes from those binaries (checked for the versions installed here)."""
    import asyncio
    import re

    from qmpgmem.host.qemu import probe_qemu

    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \| .* \| (✓|—) \| (✓|—) \|$", doc, flags=re.M)
    assert len(rows) > 50
    checked = 0
    for binary in BINARIES:
        facts = asyncio.run(probe_qemu(binary))
        if facts.version_str not in ("10.0.2", "11.1.3"):
            continue
        column = 1 if facts.version_str == "10.0.2" else 2
        listed = {row[0] for row in rows if row[column] == "✓"}
        policy = facts.qmp_policy()
        assert policy is not None
        assert listed == set(policy.unsafe_commands()), facts.version_str
        checked += 1
    if not checked:
        pytest.skip("neither QEMU 10.0.2 nor 11.1.3 is installed here")
