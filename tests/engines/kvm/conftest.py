"""Fixtures for the direct KVM engine's tests (real /dev/kvm; see helpers.needs_kvm)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qmpgmem.engines.kvm.objects import Kvm

from .helpers import build_minirom


@pytest.fixture
def kvm() -> Iterator[Kvm]:
    with Kvm() as k:
        yield k


@pytest.fixture(scope="session")
def minirom(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return build_minirom(tmp_path_factory.mktemp("minirom"))


@pytest.fixture(scope="session")
def microguest_rom() -> bytes:
    """The real micro guest ROM (built by qmpgmem.guest.image); skipped when it cannot be."""
    from qmpgmem.errors import SetupError
    from qmpgmem.guest.image import guest_image

    try:
        return guest_image("rom").read_bytes()
    except SetupError as exc:
        pytest.skip(f"the micro guest ROM cannot be built here: {exc}")
