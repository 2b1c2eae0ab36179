"""``qmpgmem lab``: build the lab kernel, boot it under QEMU TCG, run scenarios and the
kernel's selftests inside, where KVM can convert memory between private and shared."""

from __future__ import annotations

import sys
import time

import click

from qmpgmem.cli.main import cli

LAB_EPILOG = """\b
The lab is a Linux guest (L1) booted under QEMU TCG with -cpu max: its emulated AMD CPU has
SVM and nested paging, so kvm_amd runs inside it, and the lab kernel (built with
CONFIG_KVM_SW_PROTECTED_VM=y) offers sw-protected VMs with private memory attributes. L1
sees the host's root read-only, so it runs this very qmpgmem, its venv and its QEMU.
\b
  qmpgmem lab kernel                        build (15-25 min) or locate the lab kernel
  qmpgmem lab run --engine kvm scenarios/conversion
  qmpgmem lab selftests                     the kernel's guest_memfd selftests in L1
\b
Results seen in the lab come from an emulated CPU: compare them with the selftests of the
same kernel (docs/lab.md) before calling them KVM behaviour.
"""


@cli.group(
    short_help="Real private<->shared conversions in a nested L1 (QEMU TCG).", epilog=LAB_EPILOG
)
def lab() -> None:
    """Boot a Linux L1 whose KVM can convert guest memory, and run qmpgmem inside it."""


class _PhasePrinter:
    """Phases with elapsed time; while compiling, a progress line (a bar on a terminal)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.phase = ""
        self.last = 0.0
        self.tty = sys.stderr.isatty()

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        elapsed = now - self.t0
        if phase != self.phase:
            if self.tty and self.phase:
                click.echo("", err=True)
            self.phase = phase
            click.echo(f"[{_clock(elapsed)}] {phase}", err=True)
            self.last = now
            return
        if total is None or (not self.tty and now - self.last < 30):
            return
        if self.tty and now - self.last < 0.5:
            return
        self.last = now
        frac = min(done / total, 0.99) if total else 0.0
        bar = "#" * int(frac * 30)
        line = f"  [{bar:<30}] {frac:4.0%} {done} objects, {_clock(elapsed)} elapsed"
        if self.tty:
            click.echo(f"\r{line}", err=True, nl=False)
        else:
            click.echo(line, err=True)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"


@lab.command(short_help="Build (or locate) the lab kernel and its KVM selftests.")
@click.option(
    "--version",
    "series",
    metavar="X.Y",
    help="Kernel series from Debian's linux-source-X.Y (e.g. 6.12 from bookworm). "
    "Default: the newest Debian offers (sid's).",
)
@click.option("-j", "--jobs", type=click.IntRange(min=1), help="make -j (default: usable cores).")
def kernel(series: str | None, jobs: int | None) -> None:
    """Build the lab kernel from Debian's linux-source and cache it with the selftests.

    The configuration is x86_64_defconfig + kvm_guest.config + KVM, kvm_amd and
    CONFIG_KVM_SW_PROTECTED_VM built in, 9p and virtio for the host root, large subsystems
    off. The bzImage and the guest_memfd selftests built from the same tree are cached under
    ~/.cache/qmpgmem/lab/kernels, keyed by the source version and the config; a second call
    finds them at once. Prints the cache entry's path.
    """
    from qmpgmem.lab.build import build_kernel

    printer = _PhasePrinter()
    built = build_kernel(series, jobs, printer)
    if printer.tty and printer.phase.startswith("build"):
        click.echo("", err=True)
    click.echo(
        f"lab kernel {built.release} ({built.package} {built.version}; bzImage built in "
        f"{built.build_seconds:.0f} s, selftests in {built.selftest_build_seconds:.0f} s)",
        err=True,
    )
    click.echo(str(built.root))
