"""Debian packages fetched through a private apt state, never through the system's.

Why private: the lab needs Debian sid's kernel source (and busybox-static) on a bookworm
host. Adding sid to the system's sources would let apt upgrade libc; a private state (its own
sources, lists and cache, ``Dir::State::status`` empty) can only download. The sources are
derived from the system's own ``debian.sources``, so the same mirror and keyring serve both.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qmpgmem.errors import SetupError

__all__ = ["SYSTEM_SOURCES", "PrivateApt", "private_apt", "stanza_for_suite", "unpack_deb"]

log = logging.getLogger(__name__)

SYSTEM_SOURCES: Final = Path("/etc/apt/sources.list.d/debian.sources")
APT_TIMEOUT: Final = 900.0


def stanza_for_suite(sources_text: str, suite: str) -> str:
    """The first deb822 stanza of the system's sources that names a bookworm suite, with its
    ``Suites:`` replaced by ``suite``; comments dropped. Raises SetupError when there is none."""
    for stanza in re.split(r"\n\s*\n", sources_text):
        lines = [ln for ln in stanza.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        suites = [ln for ln in lines if ln.startswith("Suites:")]
        if suites and "bookworm" in suites[0]:
            out = [f"Suites: {suite}" if ln.startswith("Suites:") else ln for ln in lines]
            return "\n".join(out) + "\n"
    raise SetupError(
        f"no Debian bookworm entry in the system's apt sources to derive {suite!r} from"
    )


@dataclass
class PrivateApt:
    """An apt state under ``root`` that sees ``suite`` only ("system": the system's sources)."""

    root: Path
    suite: str
    sources: Path = SYSTEM_SOURCES

    @property
    def options(self) -> list[str]:
        root = self.root.resolve()
        return [
            "-o", "Dir::Etc::SourceList=/dev/null",
            "-o", f"Dir::Etc::SourceParts={root / 'sources'}",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", "Debug::NoLocking=1",
            "-o", "APT::Sandbox::User=root",
        ]  # fmt: skip

    def _prepare(self) -> None:
        for tool in ("apt-get", "apt-cache", "dpkg"):
            if shutil.which(tool) is None:
                raise SetupError(
                    f"the lab fetches Debian packages and needs {tool} (a Debian host)"
                )
        if not self.sources.is_file():
            raise SetupError(f"{self.sources} not found: cannot derive Debian sources from it")
        text = self.sources.read_text()
        wanted = text if self.suite == "system" else stanza_for_suite(text, self.suite)
        for sub in ("sources", "lists/partial", "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "sources" / "lab.sources").write_text(wanted)

    def _run(self, argv: Sequence[str], cwd: Path | None = None) -> str:
        log.debug("apt: %s", " ".join(argv))
        try:
            done = subprocess.run(
                list(argv), cwd=cwd, capture_output=True, text=True, timeout=APT_TIMEOUT
            )
        except subprocess.TimeoutExpired as exc:
            raise SetupError(f"{argv[0]} did not finish in {APT_TIMEOUT:.0f} s") from exc
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            what = " ".join([argv[0], *argv[-2:]])
            raise SetupError(f"{what} failed: {' / '.join(tail)}")
        return done.stdout

    def update(self) -> None:
        """Refresh the private package lists (a few seconds)."""
        self._prepare()
        self._run(["apt-get", *self.options, "-qq", "update"])

    def candidate(self, package: str) -> str | None:
        """The version apt would download for ``package``, or None when the suite lacks it."""
        out = self._run(["apt-cache", *self.options, "policy", package])
        match = re.search(r"^\s*Candidate:\s*(\S+)", out, re.M)
        return None if match is None or match.group(1) == "(none)" else match.group(1)

    def depends(self, package: str) -> list[str]:
        """The package names in ``package``'s Depends field (for meta-packages)."""
        out = self._run(["apt-cache", *self.options, "show", "--no-all-versions", package])
        match = re.search(r"^Depends:\s*(.*)$", out, re.M)
        if not match:
            return []
        return [re.split(r"[\s(]", dep.strip(), maxsplit=1)[0] for dep in match.group(1).split(",")]

    def source_packages(self, prefix: str) -> list[str]:
        """Names of packages starting with ``prefix`` (apt-cache pkgnames)."""
        out = self._run(["apt-cache", *self.options, "pkgnames", prefix])
        return sorted(out.split())

    def download(self, package: str, version: str, dest: Path) -> Path:
        """``apt-get download package=version`` into ``dest``; returns the .deb's path."""
        dest.mkdir(parents=True, exist_ok=True)
        have = sorted(dest.glob(f"{package}_*.deb"))
        wanted = version.replace(":", "%3a")
        for deb in have:
            if deb.name.startswith(f"{package}_{wanted}_"):
                return deb
        self._run(["apt-get", *self.options, "-qq", "download", f"{package}={version}"], cwd=dest)
        got = [
            d for d in dest.glob(f"{package}_*.deb") if d.name.startswith(f"{package}_{wanted}_")
        ]
        if not got:
            raise SetupError(f"apt-get download {package}={version} left no .deb in {dest}")
        return got[0]


def private_apt(suite: str) -> PrivateApt:
    """The lab's private apt state for ``suite`` ("system": the host's own sources; "sid"),
    one directory per suite under the lab cache, shared by every lab download."""
    from qmpgmem.lab.paths import lab_cache

    return PrivateApt(lab_cache() / f"apt-{suite}", suite)


def unpack_deb(deb: Path, dest: Path) -> None:
    """``dpkg -x``: the package's files under ``dest``, nothing installed."""
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["dpkg", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SetupError(f"dpkg -x {deb.name} failed: {done.stderr.strip()}")
