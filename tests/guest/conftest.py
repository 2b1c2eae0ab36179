"""Fixtures for the micro guest's tests: the QEMU binary, KVM, and a booted guest."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qmpgmem.errors import SetupError
from qmpgmem.guest.image import guest_image

from .vm import Boot, GuestVM, running_guest


def kvm_usable() -> bool:
    return os.path.exists("/dev/kvm") and os.access("/dev/kvm", os.R_OK | os.W_OK)


def kvm_backend() -> str | None:
    """kvm_intel, kvm_amd or kvm_pvm, from /sys/module; None without KVM."""
    for name in ("kvm_pvm", "kvm_intel", "kvm_amd"):
        if Path("/sys/module", name).exists():
            return name
    return None


@pytest.fixture(scope="session")
def built_images() -> None:
    """Build both images once (or skip the QEMU tests with the reason)."""
    try:
        guest_image("rom")
        guest_image("pvh")
    except SetupError as exc:
        pytest.skip(f"the micro guest cannot be built here: {exc}")


@pytest.fixture
def qemu(built_images: None) -> str:
    path = shutil.which("qemu-system-x86_64")
    if path is None:
        pytest.skip("needs qemu-system-x86_64")
    return path


def require(boot: Boot) -> None:
    if boot.accel == "kvm" and not kvm_usable():
        pytest.skip("needs /dev/kvm")


BOOTS = {
    "rom-kvm": Boot("rom", "kvm"),
    "rom-tcg": Boot("rom", "tcg"),
    "pvh-kvm": Boot("pvh", "kvm"),
}


@pytest.fixture(params=["rom-kvm", "rom-tcg"])
def rom_boot(request: pytest.FixtureRequest) -> Boot:
    boot = BOOTS[request.param]
    require(boot)
    return boot


@pytest.fixture
async def guest(qemu: str, rom_boot: Boot, tmp_path: Path) -> AsyncIterator[GuestVM]:
    """The ROM booted under KVM and under TCG."""
    async with running_guest(qemu, tmp_path, rom_boot) as vm:
        yield vm
