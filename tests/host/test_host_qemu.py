"""The QEMU probe against the real binary, each answer cross-checked with a second source.

QMP's introspection is compared with what the same binary prints for ``--version``,
``-object help``, ``-object TYPE,help`` and ``-machine TYPE,help``: two interfaces of one
binary must agree, and a probe that misreads QMP replies cannot.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from qmpgmem.errors import SetupError
from qmpgmem.host import probe_host
from qmpgmem.host.facts import CONFIDENTIAL_TYPES, MACHINES, QemuFacts
from qmpgmem.host.qemu import clear_cache, probe_qemu


def _help(binary: str, *args: str) -> str:
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, timeout=30, check=False
    ).stdout


_EXTRA = [p for p in os.environ.get("QMPGMEM_EXTRA_QEMU", "").split(os.pathsep) if p]


@pytest.fixture(params=["default", *_EXTRA])
async def binary(request: pytest.FixtureRequest, qemu_binary: str) -> str:
    """The system QEMU, plus any in QMPGMEM_EXTRA_QEMU (e.g. tools/fetch-qemu-sid.sh's)."""
    return qemu_binary if request.param == "default" else str(request.param)


@pytest.fixture
async def facts(binary: str, no_leftovers: None) -> QemuFacts:
    clear_cache()
    return await probe_qemu(binary)


async def test_version_matches_version_option(facts: QemuFacts, binary: str) -> None:
    match = re.search(r"version (\d+)\.(\d+)\.(\d+)", _help(binary, "--version"))
    assert match is not None
    assert facts.version == tuple(int(g) for g in match.groups())
    assert facts.version_str == ".".join(match.groups())


async def test_types_match_object_help(facts: QemuFacts, binary: str) -> None:
    creatable = set(_help(binary, "-object", "help").split())
    for qom_type in (*CONFIDENTIAL_TYPES, "memory-backend-memfd", "memory-backend-memfd-private"):
        assert facts.has_type(qom_type) == (qom_type in creatable), qom_type
    assert "kvm" in facts.accelerators
    # -accel help leaves out accelerators built as modules (11.x: qtest); QOM lists them
    assert set(_help(binary, "-accel", "help").split()[5:]) <= set(facts.accelerators)


async def test_properties_match_per_type_help(facts: QemuFacts, binary: str) -> None:
    for qom_type, props in facts.backend_props.items():
        shown = re.findall(r"^\s+([\w.-]+)=", _help(binary, "-object", f"{qom_type},help"), re.M)
        assert shown and set(shown) <= set(props), qom_type
    assert facts.has_backend_prop("memory-backend-memfd", "guest-memfd") == (
        "guest-memfd=" in _help(binary, "-object", "memory-backend-memfd,help")
    )
    if facts.has_type("sev-snp-guest"):  # inherited from sev-common: only QMP lists them
        assert {"cbitpos", "reduced-phys-bits", "policy"} <= set(
            facts.object_props["sev-snp-guest"]
        )


async def test_machine_properties_match_machine_help(facts: QemuFacts, binary: str) -> None:
    assert set(facts.machine_props) == set(MACHINES)
    for machine, props in facts.machine_props.items():
        text = _help(binary, "-machine", f"{machine},help")
        shown = set(re.findall(r"^\s+([\w.-]+)=", text, re.M))
        assert shown and shown <= set(props), machine
        assert facts.has_machine_prop("x-change-vmfd-on-reset", machine) == (
            "x-change-vmfd-on-reset" in shown
        )
    assert facts.machine_types["q35"].startswith("pc-q35-")


async def test_qmp_schema_and_firmware(facts: QemuFacts) -> None:
    assert {"qmp_capabilities", "query-status", "system_reset", "qom-list-types"} <= set(
        facts.qmp_commands
    )
    assert "STOP" in facts.qmp_events and "query-status" not in facts.qmp_events
    for name, path in facts.firmware.items():
        assert Path(path).is_file(), name


async def test_probe_is_cached_per_binary(facts: QemuFacts, binary: str) -> None:
    again = await probe_qemu(binary)
    assert again is facts
    host = await probe_host([binary, binary])
    assert [q.binary for q in host.qemu] == [binary]
    assert host.qemu_for(binary) is facts and host.qemu_for() is facts
    assert host.qemu_for("/no/such/qemu") is None


async def test_missing_binary_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(SetupError, match="not found"):
        await probe_qemu(str(tmp_path / "qemu-system-x86_64"))


async def test_binary_that_is_not_qemu_is_a_setup_error(tmp_path: Path, no_leftovers: None) -> None:
    fake = tmp_path / "qemu-system-x86_64"
    fake.write_text("#!/bin/sh\necho 'this is not QEMU' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(SetupError, match="this is not QEMU"):
        await probe_qemu(str(fake))
