"""Fetch, configure and build the lab kernel and the kernel's own KVM selftests, cached.

Why build both from one tree: a result seen only in the lab is compared with the kernel's
selftest on the same kernel before it is called a KVM behaviour, so the selftests must come
from the very source the L1 kernel was built from. Why a cache keyed by the source package's
version and the config digest: the build takes 15-25 minutes on two cores, and anything else
that changes it (a new Debian upload, another fragment) must give a new entry, never a stale
kernel. An entry is complete or absent: it is assembled in a temporary directory and renamed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from qmpgmem.errors import SetupError
from qmpgmem.lab import kconfig
from qmpgmem.lab.debian import PrivateApt, private_apt, unpack_deb
from qmpgmem.lab.paths import lab_cache

__all__ = [
    "BUILD_PACKAGES",
    "SELFTESTS",
    "KernelSource",
    "LabKernel",
    "build_kernel",
    "cached_kernels",
    "find_kernel",
    "missing_build_packages",
    "resolve_source",
]

log = logging.getLogger(__name__)

#: What the build runs or includes, with the Debian package that provides it.
BUILD_PACKAGES: Final = (
    ("gcc", "gcc"),
    ("make", "make"),
    ("bc", "bc"),
    ("flex", "flex"),
    ("bison", "bison"),
    ("perl", "perl"),
    ("xz", "xz-utils"),
    ("/usr/include/libelf.h", "libelf-dev"),
    ("/usr/include/openssl/opensslv.h", "libssl-dev"),
    ("rsync", "rsync"),  # make headers_install
    ("/usr/include/numaif.h", "libnuma-dev"),  # guest_memfd_test's mempolicy checks
)

#: The selftests the lab runs, relative to tools/testing/selftests/kvm ({arch}: x86 or x86_64).
SELFTESTS: Final = (
    "guest_memfd_test",
    "{arch}/private_mem_conversions_test",
    "{arch}/private_mem_kvm_exits_test",
    "set_memory_region_test",
)

#: Compile lines of a previous build of the same major version, for the progress bar's total;
#: measured and updated by every build (a guess for a major never built here).
DEFAULT_OBJECTS: Final = 2600
META_NAME: Final = "kernel.json"

Progress = Callable[[str, int, int | None], None]
"""progress(phase, done, total): the build's phases and, while compiling, objects done."""


@dataclass(frozen=True)
class KernelSource:
    """A Debian linux-source package: where it comes from and which version."""

    package: str  # linux-source-7.2
    version: str  # 7.2.13-1
    suite: str  # "sid" or "system"

    @property
    def series(self) -> str:
        return self.package.removeprefix("linux-source-")

    @property
    def key(self) -> str:
        """The cache entry's name: source version and config digest."""
        return f"{self.version.replace('~', '_').replace(':', '_')}-{kconfig.config_digest()[:12]}"


@dataclass(frozen=True)
class LabKernel:
    """A built lab kernel in the cache: bzImage, its .config, the selftest binaries."""

    root: Path
    package: str
    version: str
    release: str  # uname -r of the built kernel
    build_seconds: float
    selftest_build_seconds: float
    objects: int

    @property
    def bzimage(self) -> Path:
        return self.root / "bzImage"

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def selftests(self) -> Path:
        return self.root / "selftests"

    @property
    def series(self) -> str:
        return self.package.removeprefix("linux-source-")

    def selftest(self, name: str) -> Path:
        return self.selftests / Path(name).name

    @classmethod
    def load(cls, root: Path) -> LabKernel | None:
        try:
            meta = json.loads((root / META_NAME).read_text())
            kernel = cls(root=root, **meta)
        except (OSError, ValueError, TypeError):
            return None
        return kernel if kernel.bzimage.is_file() else None


def kernels_dir() -> Path:
    return lab_cache() / "kernels"


def cached_kernels() -> list[LabKernel]:
    """Every complete cache entry, newest series first."""
    found = [k for d in sorted(kernels_dir().glob("*")) if (k := LabKernel.load(d))]
    return sorted(found, key=lambda k: _version_tuple(k.version), reverse=True)


def find_kernel(series: str | None = None) -> LabKernel | None:
    """The newest cached kernel of ``series`` (e.g. "6.12"; None: any)."""
    for kernel in cached_kernels():
        if series is None or kernel.series == series:
            return kernel
    return None


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", version)[:4])


#: How long an answer of the archive is trusted before `lab kernel` asks again.
RESOLVE_TTL: Final = 12 * 3600.0


def resolve_source(series: str | None, refresh: bool = False) -> KernelSource:
    """Which linux-source to build: the newest Debian offers (sid's), or ``series`` from the
    system's suites (bookworm has 6.12) or else from sid. Asks the archive at most every
    RESOLVE_TTL seconds (``refresh`` asks now), so a second call is instant."""
    memo = lab_cache() / "resolved.json"
    key = series or "newest"
    answers: dict[str, dict[str, Any]] = {}
    with contextlib.suppress(OSError, ValueError):
        answers = json.loads(memo.read_text())
    known = answers.get(key)
    if known and not refresh and time.time() - float(known.get("at", 0)) < RESOLVE_TTL:
        return KernelSource(known["package"], known["version"], known["suite"])
    source = _ask_archive(series)
    answers[key] = {**asdict(source), "at": time.time()}
    memo.parent.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps(answers, indent=1) + "\n")
    return source


def _ask_archive(series: str | None) -> KernelSource:
    sid = private_apt("sid")
    sid.update()
    if series is None:
        deps = [d for d in sid.depends("linux-source") if d.startswith("linux-source-")]
        if not deps:
            raise SetupError("Debian sid's linux-source meta-package names no linux-source-X.Y")
        package = deps[0]
        version = sid.candidate(package)
        if version is None:
            raise SetupError(f"{package} has no candidate version in Debian sid")
        return KernelSource(package, version, "sid")
    package = f"linux-source-{series}"
    system = private_apt("system")
    system.update()
    for apt in (system, sid):
        version = apt.candidate(package)
        if version is not None:
            return KernelSource(package, version, apt.suite)
    offered = sorted(
        set(system.source_packages("linux-source-") + sid.source_packages("linux-source-"))
    )
    raise SetupError(f"Debian offers no {package}; it has: {', '.join(offered) or 'none'}")


def missing_build_packages() -> list[str]:
    """Debian packages the build needs that this host lacks (empty: ready)."""
    missing = []
    for probe, package in BUILD_PACKAGES:
        present = Path(probe).exists() if probe.startswith("/") else shutil.which(probe)
        if not present:
            missing.append(package)
    return missing


def _apt_for(source: KernelSource) -> PrivateApt:
    return private_apt("sid" if source.suite == "sid" else "system")


#: What an outer make (``make lab`` runs ``qmpgmem lab kernel``) leaves in the environment.
#: The selftests' lib.mk sets OUTPUT only at MAKELEVEL 0; inherited, the test programs are
#: linked by make's built-in rule without libkvm ("undefined reference to test_assert").
_OUTER_MAKE_VARS: Final = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS", "MAKEOVERRIDES", "MAKE_TERMOUT")


def make_environment() -> dict[str, str]:
    """The environment for the kernel's makes: ours, minus what an outer make put there."""
    return {k: v for k, v in os.environ.items() if k not in _OUTER_MAKE_VARS}


def _run_logged(
    argv: list[str],
    cwd: Path,
    log_file: Path,
    what: str,
    progress: Progress | None = None,
    total: int | None = None,
) -> int:
    """Run ``argv`` with its output appended to the log; with ``progress``, report each
    compiled object (returns the count). A failure raises with the log's tail."""
    count = 0
    with log_file.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=make_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                out.write(line)
                if progress is not None and line.startswith(("  CC ", "  AS ", "  CC [M] ")):
                    count += 1
                    progress(what, count, total)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    if proc.returncode != 0:
        tail = log_file.read_text(errors="replace").splitlines()[-20:]
        raise SetupError(
            f"{what} failed (exit {proc.returncode}); log {log_file}:\n" + "\n".join(tail)
        )
    return count


def _estimated_objects(series: str) -> int:
    stats = lab_cache() / "build-stats.json"
    with contextlib.suppress(OSError, ValueError, TypeError):
        return int(json.loads(stats.read_text()).get(series, DEFAULT_OBJECTS))
    return DEFAULT_OBJECTS


def _record_objects(series: str, objects: int) -> None:
    stats = lab_cache() / "build-stats.json"
    data: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(stats.read_text())
    data[series] = objects
    stats.write_text(json.dumps(data, indent=1) + "\n")


@contextlib.contextmanager
def _work_dir(path: Path) -> Iterator[Path]:
    """The build tree of one cache entry, locked against a second build of the same entry.

    Kept when the build fails, so the next call resumes where make stopped instead of
    starting the quarter of an hour again; removed once the entry is installed.
    """
    path.mkdir(parents=True, exist_ok=True)
    with (path / ".lock").open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SetupError(f"another qmpgmem is building this lab kernel in {path}") from None
        yield path


def _unpack_source(deb: Path, work: Path) -> tuple[Path, bool]:
    """The kernel tree, and whether it is a failed build's tree that make resumes in."""
    trees = [p for p in (work / "src").glob("*") if (p / ".qmpgmem-unpacked").is_file()]
    if trees:
        return trees[0], True
    shutil.rmtree(work / "src", ignore_errors=True)
    shutil.rmtree(work / "pkg", ignore_errors=True)
    unpack_deb(deb, work / "pkg")
    tarballs = sorted((work / "pkg/usr/src").glob("linux-source-*.tar.*"))
    if not tarballs:
        raise SetupError(f"{deb.name} holds no linux-source tarball under /usr/src")
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(work / "src", filter="tar")
    shutil.rmtree(work / "pkg")
    trees = [p for p in (work / "src").iterdir() if (p / "Makefile").is_file()]
    if len(trees) != 1:
        raise SetupError(f"{tarballs[0].name} did not unpack to one kernel tree")
    (trees[0] / ".qmpgmem-unpacked").touch()
    return trees[0], False


def configure(tree: Path, log_file: Path) -> str:
    """Base config + fragment + olddefconfig; returns the final .config (verified)."""
    for target in kconfig.BASE_TARGETS:
        _run_logged(["make", "-s", target], tree, log_file, f"make {target}")
    with (tree / ".config").open("a") as cfg:
        cfg.write(kconfig.fragment_text())
    _run_logged(["make", "-s", "olddefconfig"], tree, log_file, "make olddefconfig")
    text = (tree / ".config").read_text()
    missing = kconfig.missing_required(text)
    if missing:
        raise SetupError(
            "the lab kernel's configuration lost required options after olddefconfig: "
            + ", ".join(f"CONFIG_{m}" for m in missing)
        )
    return text


def selftest_arch(tree: Path) -> str:
    """The selftests' x86 directory: ``x86`` since 6.14, ``x86_64`` before."""
    kvm = tree / "tools/testing/selftests/kvm"
    return "x86" if (kvm / "x86").is_dir() else "x86_64"


def build_kernel(
    series: str | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    refresh: bool = False,
) -> LabKernel:
    """The lab kernel for ``series`` (None: the newest Debian offers), from the cache when an
    entry for the same source version and config exists, else fetched and built."""
    report = progress or (lambda phase, done, total: None)
    report("resolve source", 0, None)
    try:
        source = resolve_source(series, refresh)
    except SetupError as exc:
        fallback = find_kernel(series)
        if fallback is None:
            raise
        report(f"cannot ask Debian ({exc}); using the cached {fallback.version}", 0, None)
        return fallback
    entry = kernels_dir() / source.key
    cached = LabKernel.load(entry)
    if cached is not None:
        return cached
    missing = missing_build_packages()
    if missing:
        raise SetupError(
            "building the lab kernel needs these Debian packages: "
            f"{' '.join(missing)} (apt-get install {' '.join(missing)}; `make lab` does it)"
        )
    jobs = jobs or len(os.sched_getaffinity(0))
    cache = lab_cache()
    with _work_dir(cache / "work" / source.key) as work:
        log_file = work / "build.log"
        report(f"download {source.package} {source.version}", 0, None)
        deb = _apt_for(source).download(source.package, source.version, cache / "downloads")
        report("unpack", 0, None)
        tree, resumed = _unpack_source(deb, work)
        if resumed:
            report(f"resume the build kept in {work}", 0, None)
        report("configure", 0, None)
        config = configure(tree, log_file)
        estimate = _estimated_objects(source.series)
        # A resumed build adds to the time of the attempts before it (kept in the work dir),
        # so the figure in kernel.json is what building this kernel cost.
        spent = work / "bzImage-seconds"
        build_seconds = 0.0
        if resumed:
            with contextlib.suppress(OSError, ValueError):
                build_seconds = float(spent.read_text())
        t0 = time.monotonic()
        try:
            objects = _run_logged(
                ["make", f"-j{jobs}", "bzImage"], tree, log_file, "build bzImage", report, estimate
            )
        finally:
            build_seconds += time.monotonic() - t0
            spent.write_text(f"{build_seconds:.1f}\n")
        release = (tree / "include/config/kernel.release").read_text().strip()
        report("build selftests", 0, None)
        t1 = time.monotonic()
        _run_logged(["make", "-s", "headers_install"], tree, log_file, "make headers_install")
        arch = selftest_arch(tree)
        kvm = tree / "tools/testing/selftests/kvm"
        targets = [str(kvm / t.format(arch=arch)) for t in SELFTESTS]
        _run_logged(
            ["make", "-C", str(kvm), f"-j{jobs}", *targets], tree, log_file, "KVM selftests"
        )
        selftest_seconds = time.monotonic() - t1
        report("install into the cache", 0, None)
        staged = work / "entry"
        shutil.rmtree(staged, ignore_errors=True)
        (staged / "selftests").mkdir(parents=True)
        shutil.copy2(tree / "arch/x86/boot/bzImage", staged / "bzImage")
        (staged / "config").write_text(config)
        for target in targets:
            shutil.copy2(target, staged / "selftests" / Path(target).name)
        shutil.copy2(log_file, staged / "build.log")
        kernel = LabKernel(
            root=entry,
            package=source.package,
            version=source.version,
            release=release,
            build_seconds=round(build_seconds, 1),
            selftest_build_seconds=round(selftest_seconds, 1),
            objects=objects,
        )
        meta = {k: v for k, v in asdict(kernel).items() if k != "root"}
        (staged / META_NAME).write_text(json.dumps(meta, indent=1) + "\n")
        entry.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(entry)
        os.rename(staged, entry)
        if not resumed:  # a resumed build compiled only what was left
            _record_objects(source.series, objects)
    shutil.rmtree(work, ignore_errors=True)
    return kernel
