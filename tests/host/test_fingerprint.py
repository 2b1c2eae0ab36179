"""The host fingerprint: what it says is what this host is, read the way a person would."""

from __future__ import annotations

import platform
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from qmpgmem import __version__, hostinfo
from qmpgmem.host import fingerprint
from qmpgmem.host.cpu import cpu_kind
from qmpgmem.host.fingerprint import cpu_model, debian_packages, host_fingerprint, qemu_build
from qmpgmem.host.firmware import find_firmware

needs_dpkg = pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg (Debian)")


def _dpkg_owner(path: str) -> tuple[str, str] | None:
    out = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return None
    package = out.stdout.split(":", 1)[0]
    version = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return package, version


def test_fields_are_this_host(qemu_binary: str) -> None:
    host = host_fingerprint(engine="qemu")
    assert host.hostname == socket.gethostname()
    assert host.kernel_release == platform.release()
    assert host.kvm_backend == (hostinfo.kvm_backend() or "none")
    assert host.cpu == cpu_kind()
    assert host.qmpgmem_version == __version__
    assert host.python_version == platform.python_version()
    assert host.engine == "qemu"
    (qemu,) = host.qemu
    assert qemu.path == qemu_binary == host.qemu_binary
    assert qemu.version == hostinfo.qemu_version(qemu_binary) == host.qemu_version
    version_line = subprocess.run(
        [qemu_binary, "--version"], capture_output=True, text=True, check=True
    ).stdout.splitlines()[0]
    assert qemu.build is None or f"({qemu.build})" in version_line
    found = find_firmware(qemu_binary)
    assert {(f.name, f.path) for f in host.firmware} >= set(found.items())


def test_cpu_model_is_proc_cpuinfos(tmp_path: Path) -> None:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    assert cpu_model() == (names[0] if names else "")
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nmodel name\t: other\n")
    assert cpu_model(fake) == "Example CPU @ 2.0GHz"
    fake.write_text("processor\t: 0\nCPU implementer\t: 0x41\n")  # no model name (arm64)
    assert cpu_model(fake) == ""
    assert cpu_model(tmp_path / "missing") == ""


@needs_dpkg
def test_qemu_package_is_what_dpkg_says(qemu_binary: str) -> None:
    (qemu,) = host_fingerprint(qemu_binaries=[qemu_binary]).qemu
    owner = _dpkg_owner(qemu_binary)
    assert (qemu.package, qemu.package_version) == (owner or (None, None))
    # the binary's own build string names the same Debian version, when both are there
    if owner and qemu.build and qemu.build.startswith("Debian "):
        assert qemu.build.removeprefix("Debian ") in owner[1]


@needs_dpkg
def test_a_bare_name_is_the_binary_on_path(qemu_binary: str) -> None:
    """``probe`` takes "qemu-system-x86_64"; dpkg -S would take that for a pattern."""
    name = Path(qemu_binary).name
    (qemu,) = host_fingerprint(qemu_binaries=[name]).qemu
    assert qemu.path == shutil.which(name)
    assert qemu.package == (_dpkg_owner(qemu_binary) or (None,))[0]


@needs_dpkg
def test_files_no_package_owns_are_null(tmp_path: Path, qemu_binary: str) -> None:
    copy = tmp_path / "qemu-system-x86_64"
    shutil.copy(qemu_binary, copy)
    (qemu,) = host_fingerprint(qemu_binaries=[str(copy)]).qemu
    assert qemu.version == hostinfo.qemu_version(qemu_binary)  # it still runs
    assert qemu.package is None and qemu.package_version is None
    assert debian_packages([str(copy), "/nonexistent/file"]) == {
        str(copy): None,
        "/nonexistent/file": None,
    }


def test_without_dpkg_packages_are_null(
    tmp_path: Path, qemu_binary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fingerprint, "_PACKAGES", {})  # forget what earlier tests cached
    monkeypatch.setenv("PATH", str(tmp_path))  # a host without dpkg
    (qemu,) = host_fingerprint(qemu_binaries=[qemu_binary]).qemu
    assert qemu.version is not None
    assert qemu.package is None and qemu.package_version is None
    assert all(f.package is None for f in host_fingerprint(qemu_binaries=[]).firmware)


def test_qemu_build_of_something_that_is_not_qemu(tmp_path: Path) -> None:
    assert qemu_build(str(tmp_path / "absent")) == (None, None)
    assert qemu_build("/bin/true") == (None, None)


def test_properties_are_flat_text(qemu_binary: str) -> None:
    host = host_fingerprint(qemu_binaries=[qemu_binary, qemu_binary + "-absent"])
    props = host.properties()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in props.items())
    assert props["hostname"] == host.hostname and props["qemu[0].path"] == qemu_binary
    assert props["qemu[1].path"] == qemu_binary + "-absent" and "qemu[1].version" not in props
    for i, fw in enumerate(host.firmware):
        assert props[f"firmware[{i}].path"] == fw.path
