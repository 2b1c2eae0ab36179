"""The lab kernel's cache: keys, entries, estimates, the archive's answer reused, offline use;
and the private apt state's sources. No kernel is built here."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from qmpgmem.errors import SetupError
from qmpgmem.lab import build
from qmpgmem.lab.build import META_NAME, KernelSource, LabKernel
from qmpgmem.lab.debian import stanza_for_suite
from qmpgmem.lab.paths import CACHE_ENV

SOURCES = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    return tmp_path


def _entry(cache: Path, name: str, version: str, package: str = "linux-source-7.2") -> Path:
    root = cache / "kernels" / name
    root.mkdir(parents=True)
    (root / "bzImage").write_bytes(b"MZ")
    meta = {"package": package, "version": version, "release": f"{version}-lab",
            "build_seconds": 740.0, "selftest_build_seconds": 23.0, "objects": 2130}  # fmt: skip
    (root / META_NAME).write_text(json.dumps(meta))
    return root


def test_sid_stanza_keeps_mirror_and_keyring_and_only_sid() -> None:
    stanza = stanza_for_suite(SOURCES, "sid")
    assert "Suites: sid\n" in stanza
    assert "URIs: http://mirror.example/debian\n" in stanza
    assert "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg" in stanza
    assert "bookworm" not in stanza and "#" not in stanza and "security" not in stanza
    with pytest.raises(SetupError, match="no Debian bookworm entry"):
        stanza_for_suite("Types: deb\nSuites: jammy\n", "sid")


def test_key_names_version_and_config() -> None:
    key = KernelSource("linux-source-6.12", "6.12.118-1~deb12u1", "system").key
    assert key.startswith("6.12.118-1_deb12u1-") and "~" not in key
    assert KernelSource("linux-source-6.12", "6.12.118-1~deb12u1", "system").series == "6.12"


def test_incomplete_entries_are_not_kernels(cache: Path) -> None:
    good = _entry(cache, "a", "7.2.13-1")
    broken = cache / "kernels/b"
    broken.mkdir()
    (broken / META_NAME).write_text("{not json")
    no_image = _entry(cache, "c", "7.2.14-1")
    (no_image / "bzImage").unlink()
    assert [k.root for k in build.cached_kernels()] == [good]


def test_find_kernel_by_series_newest_first(cache: Path) -> None:
    _entry(cache, "a", "6.12.117-1~deb12u1", "linux-source-6.12")
    _entry(cache, "b", "6.12.118-1~deb12u1", "linux-source-6.12")
    _entry(cache, "c", "7.2.13-1")
    assert build.find_kernel() is not None and build.find_kernel().series == "7.2"  # type: ignore[union-attr]
    found = build.find_kernel("6.12")
    assert isinstance(found, LabKernel) and found.version == "6.12.118-1~deb12u1"
    assert build.find_kernel("6.1") is None


def test_estimate_from_the_last_build_of_the_series(cache: Path) -> None:
    assert build._estimated_objects("6.12") == build.DEFAULT_OBJECTS
    build._record_objects("7.2", 2130)
    assert build._estimated_objects("7.2") == 2130
    assert build._estimated_objects("6.12") == build.DEFAULT_OBJECTS


def test_archive_answer_is_reused_then_asked_again(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str | None] = []

    def ask(series: str | None) -> KernelSource:
        asked.append(series)
        return KernelSource("linux-source-7.2", f"7.2.{len(asked)}-1", "sid")

    monkeypatch.setattr(build, "_ask_archive", ask)
    first = build.resolve_source(None)
    assert build.resolve_source(None) == first and len(asked) == 1
    assert build.resolve_source(None, refresh=True).version == "7.2.2-1"
    memo = json.loads((cache / "resolved.json").read_text())
    memo["newest"]["at"] = time.time() - build.RESOLVE_TTL - 1
    (cache / "resolved.json").write_text(json.dumps(memo))
    assert build.resolve_source(None).version == "7.2.3-1"


def test_offline_uses_the_cached_kernel(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(series: str | None, refresh: bool = False) -> KernelSource:
        raise SetupError("apt-get update failed: network unreachable")

    monkeypatch.setattr(build, "resolve_source", offline)
    with pytest.raises(SetupError, match="network unreachable"):
        build.build_kernel()
    _entry(cache, "a", "7.2.13-1")
    phases: list[str] = []
    kernel = build.build_kernel(progress=lambda phase, done, total: phases.append(phase))
    assert kernel.version == "7.2.13-1"
    assert any("using the cached 7.2.13-1" in p for p in phases)


def test_missing_build_packages_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        build, "BUILD_PACKAGES", (("no-such-tool-xyz", "xyz-utils"), ("sh", "dash"))
    )
    assert build.missing_build_packages() == ["xyz-utils"]
