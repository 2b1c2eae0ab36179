"""Firmware lookup: a private QEMU prefix first, then the distribution's paths."""

from __future__ import annotations

from pathlib import Path

from qmpgmem.host.firmware import FIRMWARE_NAMES, FIRMWARE_PATHS, find_firmware


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * 16)
    return path


def test_names_are_the_table() -> None:
    assert tuple(FIRMWARE_PATHS) == FIRMWARE_NAMES
    assert {"ovmf", "ovmf-amdsev", "ovmf-inteltdx"} <= set(FIRMWARE_NAMES)


def test_system_paths_are_what_exists() -> None:
    found = find_firmware()
    for name, candidates in FIRMWARE_PATHS.items():
        existing = [Path("/", c) for c in candidates if Path("/", c).is_file()]
        assert found.get(name) == (str(existing[0]) if existing else None), name


def test_private_prefix_first(tmp_path: Path) -> None:
    binary = _touch(tmp_path / "usr/bin/qemu-system-x86_64")
    amdsev = _touch(tmp_path / "usr/share/ovmf/OVMF.amdsev.fd")
    tdx = _touch(tmp_path / "usr/share/ovmf/OVMF.inteltdx.fd")
    found = find_firmware(str(binary))
    assert found["ovmf-amdsev"] == str(amdsev)
    assert found["ovmf-inteltdx"] == str(tdx)
    # names the prefix lacks still come from the system, when the system has them
    assert found.get("ovmf") == find_firmware().get("ovmf")
    # a wrapper script at the prefix root finds the same tree
    wrapper = _touch(tmp_path / "qemu-system-x86_64")
    assert find_firmware(str(wrapper))["ovmf-amdsev"] == str(amdsev)
