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
