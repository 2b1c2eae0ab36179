"""The initramfs: a newc archive the kernel can unpack, holding busybox and our /init."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from qmpgmem.lab.initramfs import (
    CpioEntry,
    init_script,
    initramfs_entries,
    read_cpio,
    write_cpio,
)


def test_round_trip_keeps_names_modes_and_data() -> None:
    entries = [CpioEntry("bin", 0o040755), CpioEntry("init", 0o100755, b"#!/bin/sh\n" * 3)]
    assert read_cpio(write_cpio(entries)) == entries


def test_every_header_and_payload_is_four_byte_aligned() -> None:
    archive = write_cpio([CpioEntry("a", 0o100644, b"x"), CpioEntry("bb", 0o100644, b"yz")])
    assert len(archive) % 4 == 0
    assert archive.count(b"070701") == 3  # two entries and the trailer


def test_contents_busybox_and_init() -> None:
    entries = {e.name: e for e in initramfs_entries(b"\x7fELF-busybox", init_script())}
    assert entries["init"].mode == 0o100755
    assert entries["bin/busybox"].data == b"\x7fELF-busybox"
    for d in ("dev", "proc", "sys", "host", "tmp"):
        assert entries[d].mode == 0o040755


def test_init_script_runs_the_job_in_a_chroot_and_reports_its_status() -> None:
    text = init_script().decode()
    assert text.startswith("#!/bin/busybox sh")
    assert "mount -t 9p" in text and "hostroot" in text and "ro" in text
    assert "chroot /host" in text and "/run/qmpgmem-lab/job.sh" in text
    assert 'echo "$rc" > /host/run/qmpgmem-lab/rc' in text
    assert text.rstrip().endswith("poweroff -f")


@pytest.mark.skipif(shutil.which("cpio") is None, reason="needs cpio(1) to cross-check")
def test_gnu_cpio_reads_the_archive(tmp_path: Path) -> None:
    archive = write_cpio(initramfs_entries(b"busybox-bytes", init_script()))
    listing = subprocess.run(
        ["cpio", "-it", "--quiet"], input=archive, capture_output=True, check=True
    ).stdout.decode()
    assert listing.split() == [
        "bin",
        "sbin",
        "dev",
        "proc",
        "sys",
        "host",
        "tmp",
        "bin/busybox",
        "init",
    ]


def test_shell_syntax_of_init(tmp_path: Path) -> None:
    sh = shutil.which("sh")
    assert sh is not None
    script = tmp_path / "init"
    script.write_bytes(init_script())
    subprocess.run([sh, "-n", str(script)], check=True)
