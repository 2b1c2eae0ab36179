"""The fleet tier: deploy/ansible and the tmt plan, run for real with ansible-core and tmt
from build/fleet-tools (tools/install-fleet-tools.sh, which `make fleet` runs first) against
hosts that are sshd's on loopback addresses of this machine (tests_fleet/hosts.py).

Without the tools a test skips and says so, except in CI (``CI`` set), where it fails: the
tier must not vanish from CI unnoticed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests_fleet.hosts import SSHD, Fleet

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "build" / "fleet-tools" / "bin"
QMPGMEM = REPO / ".venv" / "bin" / "qmpgmem"
#: the part of the library the tier runs on each host: passes (smoke) and expected skips
#: (confidential, which this kind of host cannot run); the plan's default is the whole library
SELECT = "smoke or confidential"


def _this_host_class() -> str:
    """The class of deploy/classes this machine belongs to. This kind of machine has had two
    kernels: 6.18.44-fc-v1147, whose KVM offers guest_memfd (kvm_pvm), and v1272, whose
    KVM_CAP_GUEST_MEMFD is 0 (kvm_pvm-no-gmem); each class's skips differ in that."""
    from qmpgmem.host.kernel import probe_kvm

    return "kvm_pvm" if probe_kvm().cap("KVM_CAP_GUEST_MEMFD") > 0 else "kvm_pvm-no-gmem"


#: the class this machine is qualified against, and its inventory group (group_vars name it)
HOST_CLASS = _this_host_class()
HOST_GROUP = HOST_CLASS.replace("-", "_")
#: what a copy of the working tree leaves out (.gitignore's names, .git)
NOT_SOURCES = frozenset(
    {
        ".git", ".venv", "build", "dist", "__pycache__", ".mypy_cache", ".ruff_cache",
        ".pytest_cache", "qmpgmem-artifacts",
    }
)  # fmt: skip


def need(path: Path, why: str) -> Path:
    if not (path.exists() and os.access(path, os.X_OK)):
        text = f"needs {path} ({why}; make fleet runs tools/install-fleet-tools.sh)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must install the fleet tools: {text}")
        pytest.skip(text)
    return path


@pytest.fixture(scope="session")
def ansible_playbook() -> Path:
    return need(TOOLS / "ansible-playbook", "ansible-core in the fleet tools' venv")


@pytest.fixture(scope="session")
def tmt() -> Path:
    return need(TOOLS / "tmt", "tmt in the fleet tools' venv")


@pytest.fixture(scope="session")
def sshd() -> Path:
    return need(Path(SSHD), "Debian's openssh-server, for the test hosts")


@pytest.fixture(scope="session")
def controller_qmpgmem() -> Path:
    return need(QMPGMEM, "the checkout's venv, make setup")


@pytest.fixture(scope="module")
def fleet(sshd: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Two hosts, fleet-a on 127.0.0.2 and fleet-b on 127.0.0.3, for the module's tests;
    stopped at the end, which fails the last test if a host's processes outlive it."""
    root = tmp_path_factory.mktemp("fleet")
    fleet = Fleet(root)
    try:
        fleet.start()
        yield fleet
    finally:
        fleet.stop()
        shutil.rmtree(root, ignore_errors=True)


def copy_tree(dest: Path) -> Path:
    """This working tree without what is ignored: what a clone would hold, uncommitted
    changes included."""

    def ignore(directory: str, names: list[str]) -> list[str]:
        return [
            n for n in names
            if n in NOT_SOURCES or n.endswith(".egg-info")
            or (n == "build" and Path(directory).name == "microguest")
        ]  # fmt: skip

    shutil.copytree(REPO, dest, symlinks=True, ignore=ignore)
    return dest


def expected_rows(select: str = SELECT) -> set[tuple[str, str]]:
    """(scenario, engine) of every run the selection makes here, from this checkout's
    qmpgmem --plan: what each host's report and the aggregate must hold."""
    out = subprocess.run(
        [str(QMPGMEM), "run", "--engine", "qemu", "--engine", "kvm", "-m", select, "--plan",
         "--json", "-"],
        capture_output=True, text=True, check=True, cwd=REPO, timeout=300,
    )  # fmt: skip
    rows = {(r["scenario"], r["engine"]) for r in json.loads(out.stdout)["results"]}
    assert rows, f"-m {select!r} selects nothing"
    return rows


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
