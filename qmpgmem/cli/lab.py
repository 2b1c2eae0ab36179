"""``qmpgmem lab``: build the lab kernel, boot it under QEMU TCG, run scenarios and the
kernel's selftests inside, where KVM can convert memory between private and shared."""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from qmpgmem.cli.group import EXIT_FAILED, cli

if TYPE_CHECKING:
    from qmpgmem.lab.build import LabKernel
    from qmpgmem.lab.machine import LabOutcome

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
@click.option(
    "--refresh",
    is_flag=True,
    help="Ask Debian for the newest version now (else its answer is reused for 12 hours).",
)
def kernel(series: str | None, jobs: int | None, refresh: bool) -> None:
    """Build the lab kernel from Debian's linux-source and cache it with the selftests.

    The configuration is x86_64_defconfig + kvm_guest.config + KVM, kvm_amd and
    CONFIG_KVM_SW_PROTECTED_VM built in, 9p and virtio for the host root, large subsystems
    off. The bzImage and the guest_memfd selftests built from the same tree are cached under
    ~/.cache/qmpgmem/lab/kernels, keyed by the source version and the config; a second call
    finds them at once. Prints the cache entry's path.
    """
    from qmpgmem.lab.build import build_kernel

    printer = _PhasePrinter()
    built = build_kernel(series, jobs, printer, refresh)
    if printer.tty and printer.phase.startswith("build"):
        click.echo("", err=True)
    click.echo(
        f"lab kernel {built.release} ({built.package} {built.version}; bzImage built in "
        f"{built.build_seconds:.0f} s, selftests in {built.selftest_build_seconds:.0f} s)",
        err=True,
    )
    click.echo(str(built.root))


# ---- booting L1 for a job ------------------------------------------------------------------

#: ``qmpgmem run`` options whose values are host paths the job writes: rewritten to the share.
_OUTPUT_OPTIONS = {
    "--json": "run.json",
    "--junit": "junit.xml",
    "--artifacts": "artifacts",
    "--write-expected-skips": "expected-skips.yaml",
}


#: How LabMachine.run words a death of L1's kernel or CPU (before or during the job).
_KERNEL_DIED = ("L1's kernel died", "L1 did not boot to its job (", "L1's CPU took a triple fault")

#: L1 console lines shown even without -v: the lab's own complaints and a dying kernel.
_ALWAYS_SHOWN = ("QMPGMEM-LAB-FAILED", "QMPGMEM-LAB-WARNING", "Kernel panic", "Oops", "BUG:")


def _lab_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options every command that boots L1 takes."""
    return _add_lab_options(f, many_kernels=False)


def _lab_run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``lab run``'s: ``--kernel`` repeats (the kernels as an axis, one L1 boot each)."""
    return _add_lab_options(f, many_kernels=True)


def _add_lab_options(f: Callable[..., Any], many_kernels: bool) -> Callable[..., Any]:
    kernel_help = "Lab kernel series (default: the newest one built; built when none is)."
    if many_kernels:
        kernel_help += (
            " Repeat to run on each kernel: one L1 boot per kernel, one merged report whose "
            "results name their kernel."
        )
    options = [
        click.option(
            "--kernel", "series", metavar="X.Y", multiple=many_kernels, help=kernel_help
        ),
        click.option(
            "--l1-cpus", type=click.IntRange(1, 8), default=2, show_default=True,
            help="vCPUs of L1 (TCG threads).",
        ),
        click.option(
            "--l1-memory", type=click.IntRange(512), default=4096, show_default=True,
            metavar="MIB", help="Memory of L1.",
        ),
        click.option(
            "--l1-numa", type=click.IntRange(1, 4), default=1, show_default=True,
            help="NUMA nodes of L1 (memory and vCPUs split evenly).",
        ),
        click.option(
            "--l1-qemu", default="qemu-system-x86_64", show_default=True, metavar="BIN",
            help="The host QEMU that runs L1 under TCG.",
        ),
        click.option(
            "--timeout", type=click.FloatRange(min=10), default=1800.0, show_default=True,
            help="Seconds before L1 is stopped, whatever it is doing.",
        ),
        click.option(
            "--lab-logs",
            type=click.Path(path_type=Path),
            default=Path("qmpgmem-artifacts/lab"),
            show_default=True,
            help="Where L1's console log, QEMU log and argv are kept when L1 fails "
            "(and always with -v).",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _lab_kernel(series: str | None) -> LabKernel:
    from qmpgmem.lab.build import build_kernel, find_kernel

    found = find_kernel(series)
    if found is not None:
        return found
    click.echo(
        f"lab: no {'lab kernel ' + series if series else 'lab kernel'} built yet; building it "
        "now (qmpgmem lab kernel, 15-25 minutes)",
        err=True,
    )
    return build_kernel(series, None, _PhasePrinter())


def _boot(
    job: str, opts: dict[str, Any], collect: Callable[[Path], None] | None = None
) -> tuple[LabOutcome, LabKernel]:
    """Boot L1, run ``job``, hand its output directory to ``collect``; exits on failure."""
    from qmpgmem.guest.image import guest_image
    from qmpgmem.lab.machine import LabConfig, LabError, LabMachine

    kernel = _lab_kernel(opts["series"])
    from qmpgmem.fasthash.build import load as load_hash_helper

    for kind in ("rom", "pvh"):  # L1 sees the host's cache read-only: build images here
        guest_image(kind)
    load_hash_helper()  # and the hash helper (else L1 compiles its own, under TCG)
    config = LabConfig(
        kernel=kernel,
        qemu=opts["l1_qemu"],
        cpus=opts["l1_cpus"],
        memory_mib=opts["l1_memory"],
        numa_nodes=opts["l1_numa"],
        timeout=opts["timeout"],
    )
    verbose = logging.getLogger("qmpgmem").isEnabledFor(logging.INFO)

    def on_line(kind: str, line: str) -> None:
        if kind == "job":
            click.echo(line)
        elif verbose or any(word in line for word in _ALWAYS_SHOWN):
            click.echo(f"L1| {line}", err=True)

    click.echo(
        f"lab: booting L1 ({kernel.release}, {config.cpus} vCPUs, {config.memory_mib} MiB, "
        f"QEMU TCG -cpu max)",
        err=True,
    )
    logs: Path = opts["lab_logs"]
    try:
        for attempt in (1, 2):
            with LabMachine(config) as machine:
                try:
                    outcome = machine.run(job, on_line)
                except LabError as exc:
                    kept = machine.keep_logs(logs)
                    where = kept[0].parent if kept else logs
                    # L1's kernel, under TCG with 2 vCPUs, now and then dies of an int3 Oops
                    # in its own text patching (2 of ~15 boots, 2026-12-02), and its emulated
                    # CPU now and then triple-faults with nothing on the console (docs/lab.md):
                    # that says nothing of the job, so such a death is retried once, in the
                    # open.
                    if attempt == 1 and str(exc).startswith(_KERNEL_DIED):
                        click.echo(f"lab: {exc}; logs kept in {where}; booting L1 again", err=True)
                        continue
                    click.echo(f"lab: error: {exc}", err=True)
                    click.echo(f"lab: L1's logs kept in {where}", err=True)
                    raise click.exceptions.Exit(EXIT_FAILED) from None
                if verbose:
                    machine.keep_logs(logs)
                if collect is not None:
                    collect(machine.out_dir)
                break
    except KeyboardInterrupt:
        click.echo("interrupted: L1 was stopped and its run directory removed", err=True)
        sys.exit(130)
    click.echo(
        f"lab: L1 ready in {outcome.boot_seconds or 0:.1f} s, "
        f"job {outcome.job_seconds or 0:.1f} s, wall {outcome.wall_seconds:.1f} s, "
        f"job exit status {outcome.rc}",
        err=True,
    )
    return outcome, kernel


def _rewrite_outputs(args: list[str], share_out: str) -> tuple[list[str], dict[str, Path]]:
    """Point the run's output options at the share; returns the new args and where each
    output goes on the host."""
    out: list[str] = []
    wanted: dict[str, Path] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name in _OUTPUT_OPTIONS:
            if not eq:
                if i + 1 >= len(args):
                    raise click.UsageError(f"{name} needs a value")
                value = args[i + 1]
                i += 1
            if value == "-":
                raise click.UsageError(
                    f"{name} -: a lab run's reports come back through L1's share; name a file"
                )
            wanted[name] = Path(value)
        else:
            out.append(arg)
        i += 1
    wanted.setdefault("--artifacts", Path("qmpgmem-artifacts"))
    for name, target in _OUTPUT_OPTIONS.items():
        if name in wanted:
            out += [name, f"{share_out}/{target}"]
    return out, wanted


def _copy_back(out_dir: Path, wanted: dict[str, Path]) -> None:
    for name, host_path in wanted.items():
        produced = out_dir / _OUTPUT_OPTIONS[name]
        if not produced.exists():
            continue
        if produced.is_dir():
            for item in produced.iterdir():
                dest = host_path / item.name
                host_path.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(item, dest, symlinks=True)
        else:
            host_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(produced, host_path)


def _inner_qmpgmem() -> str:
    """qmpgmem as L1 runs it: this interpreter (the venv's, visible through the host root)."""
    return f"{shlex.quote(sys.executable)} -m qmpgmem"


@lab.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": True},
    short_help="Run scenarios inside L1 (the run command's options).",
)
@_lab_run_options
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def lab_run(run_args: tuple[str, ...], **opts: Any) -> None:
    """Run `qmpgmem run RUN_ARGS` inside L1, with its lines streamed live.

    RUN_ARGS are the run command's paths and options, unchanged (see qmpgmem run --help);
    --json, --junit and --artifacts are written on this host where you name them. With
    --kernel repeated, L1 boots once per kernel and --json and --junit hold all kernels'
    results, each naming its kernel (artifacts go to ARTIFACTS/KERNEL-RELEASE). Exit
    status: the inner run's (0 all passed or skipped, 1 something failed; the worst of the
    kernels'), 1 when L1 failed, 130 when interrupted.

    \b
    Examples:
      qmpgmem lab run --engine kvm scenarios/conversion
      qmpgmem lab run --kernel 6.12 --engine kvm scenarios/conversion --json lab.json
      qmpgmem lab run --kernel 7.2 --kernel 6.12 --engine kvm scenarios/conversion --json k.json
      qmpgmem lab run --engine qemu scenarios/conversion -k default-vm
    """
    from qmpgmem.lab.machine import SHARE_IN_L1

    kernels: tuple[str, ...] = tuple(dict.fromkeys(opts["series"]))
    args, wanted = _rewrite_outputs(list(run_args), f"{SHARE_IN_L1}/out")
    if len(kernels) > 1:
        _run_on_kernels(kernels, args, wanted, opts, f"{SHARE_IN_L1}/out")
    opts = dict(opts, series=kernels[0] if kernels else None)
    inner = f"{_inner_qmpgmem()} run {shlex.join(args)}"
    outcome, _ = _boot(_job(inner), opts, lambda out: _copy_back(out, wanted))
    raise click.exceptions.Exit(outcome.rc)


def _run_on_kernels(
    kernels: tuple[str, ...],
    args: list[str],
    wanted: dict[str, Path],
    opts: dict[str, Any],
    share_out: str,
) -> None:
    """One L1 boot per kernel, then one merged report (qmpgmem/lab/merge.py); exits.

    An L1 that fails ends the run; the report then holds the kernels done so far and says
    which one failed (``complete: false``)."""
    from qmpgmem.lab.merge import merge_kernel_reports
    from qmpgmem.report.envelope import RunDocument, load_report
    from qmpgmem.report.files import write_reports

    if "--write-expected-skips" in wanted:
        raise click.UsageError(
            "--write-expected-skips takes one lab kernel: an expected-skips file is per host "
            "class, and each kernel is another one"
        )
    if "--json" not in wanted:  # the merge reads each kernel's report
        args = [*args, "--json", f"{share_out}/{_OUTPUT_OPTIONS['--json']}"]
    inner = f"{_inner_qmpgmem()} run {shlex.join(args)}"
    docs: list[RunDocument] = []
    codes: list[int] = []

    def collect(out: Path) -> None:
        produced = out / _OUTPUT_OPTIONS["--json"]
        if not produced.exists():
            return
        doc = load_report(produced.read_text())
        assert isinstance(doc, RunDocument)
        docs.append(doc)
        arts = {"--artifacts": wanted["--artifacts"] / doc.host.kernel_release}
        _copy_back(out, arts)

    def finish(missing: str | None) -> None:
        if docs:
            write_reports(
                merge_kernel_reports(docs, missing), wanted.get("--json"), wanted.get("--junit")
            )

    for n, series in enumerate(kernels, 1):
        click.echo(f"lab: kernel {n} of {len(kernels)}: {series}", err=True)
        before = len(docs)
        try:
            outcome, kernel = _boot(_job(inner), dict(opts, series=series), collect)
        except click.exceptions.Exit:
            finish(f"L1 of lab kernel {series} failed")
            raise
        codes.append(outcome.rc)
        if len(docs) == before:
            click.echo(f"lab: kernel {kernel.release}: the run wrote no report", err=True)
            codes.append(EXIT_FAILED)
    finish(None if len(docs) == len(kernels) else "a kernel's run wrote no report")
    if docs:
        click.echo(f"lab: {len(docs)} kernels: {merge_kernel_reports(docs).summary.counts()}")
    raise click.exceptions.Exit(max(codes))


def _job(command: str) -> str:
    """A job that runs ``command`` with its output through a pipe (so the inner qmpgmem does
    not take L1's serial console for a terminal) and exits with its status."""
    return (
        f'{{ {command}; echo $? > "$QMPGMEM_LAB_OUT/.rc"; }} 2>&1 | cat\n'
        'exit "$(cat "$QMPGMEM_LAB_OUT/.rc" 2>/dev/null || echo 1)"\n'
    )


#: ``kernel-contract`` options whose values are host paths the job writes: rewritten to the share.
_CONTRACT_OUTPUTS = {"--json": "run.json", "--junit": "junit.xml"}


def contract_job_args(
    names: tuple[str, ...], outputs: dict[str, Path | None], share_out: str
) -> tuple[list[str], dict[str, Path]]:
    """The inner ``kernel-contract`` arguments (each output pointed at the share) and where
    each output goes on the host."""
    args = list(names)
    wanted: dict[str, Path] = {}
    for option, host_path in outputs.items():
        if host_path is None:
            continue
        if str(host_path) == "-":
            raise click.UsageError(
                f"{option} -: a lab run's reports come back through L1's share; name a file"
            )
        args += [option, f"{share_out}/{_CONTRACT_OUTPUTS[option]}"]
        wanted[option] = host_path
    return args, wanted


@lab.command("kernel-contract", short_help="Run the kernel-contract checks inside L1.")
@_lab_options
@click.argument("names", nargs=-1)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write the report here.")
@click.option(
    "--junit", "junit_path", type=click.Path(path_type=Path), help="Write JUnit XML here."
)
def lab_contract(
    names: tuple[str, ...], json_path: Path | None, junit_path: Path | None, **opts: Any
) -> None:
    """Run `qmpgmem kernel-contract [NAMES...]` inside L1 (kvm_amd with sw-protected VMs);
    --json and --junit are written inside L1 to the share and copied to the paths given."""
    from qmpgmem.lab.machine import SHARE_IN_L1

    args, wanted = contract_job_args(
        names, {"--json": json_path, "--junit": junit_path}, f"{SHARE_IN_L1}/out"
    )
    inner = f"{_inner_qmpgmem()} kernel-contract {shlex.join(args)}".rstrip()

    def copy_back(out: Path) -> None:
        for option, host_path in wanted.items():
            produced = out / _CONTRACT_OUTPUTS[option]
            if produced.exists():
                host_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(produced, host_path)

    outcome, _ = _boot(_job(inner), opts, copy_back)
    raise click.exceptions.Exit(outcome.rc)


@lab.command("selftests", short_help="Run the kernel's guest_memfd selftests inside L1.")
@_lab_options
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write a JSON report.")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Write JUnit XML.")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Run each selftest N times in the one L1 boot; one result each, flaky when they differ.",
)
@click.option("-k", "substring", help="Only the selftest runs whose name contains SUBSTRING.")
@click.option(
    "--run-timeout",
    type=click.FloatRange(min=10),
    help="Seconds each run may take (default: 300, 600 for the conversion and memslot tests).",
)
def lab_selftests(
    json_path: Path | None,
    junit_path: Path | None,
    repeat: int,
    substring: str | None,
    run_timeout: float | None,
    **opts: Any,
) -> None:
    """Run the kernel's selftests built with the lab kernel, in L1, and report each like a
    scenario: guest_memfd_test, private_mem_kvm_exits_test, private_mem_conversions_test
    (plain, -n N -m N with N = L1's vCPUs, -s shmem) and set_memory_region_test.

    Their exit status decides (0 pass, 4 skip, else fail); their TAP lines are the steps. A
    run still going 15 s before its deadline has its threads noted in its result.

    \b
    How often does the two-vCPU conversion test hang in the lab?
      qmpgmem lab selftests -k 'conversions_test -n' --repeat 100 --run-timeout 30
    """
    import dataclasses

    from qmpgmem.host.fingerprint import host_fingerprint
    from qmpgmem.lab.selftests import collect, default_runs, job_script, select_runs
    from qmpgmem.report.result import RunReport, ScenarioResult, Status, Summary

    runs = select_runs(default_runs(opts["l1_cpus"]), substring)
    if not runs:
        raise click.UsageError(f"-k {substring!r} matches none of the lab's selftest runs")
    if run_timeout is not None:
        runs = [dataclasses.replace(r, timeout=run_timeout) for r in runs]
    results: list[ScenarioResult] = []
    kernel = _lab_kernel(opts["series"])

    def gather(out: Path) -> None:
        results.extend(collect(out, runs, kernel, repeat))

    outcome, _ = _boot(job_script(kernel, runs, repeat), opts, gather)
    for r in results:
        line = f"{r.status.upper():8} {r.scenario} ({r.duration_s:.2f}s)"
        if r.repeats is not None and r.status is not Status.FLAKY:  # flaky: in its reason
            line += f" [{r.repeats.counts()}]"
        click.echo(line + (f" — {r.reason}" if r.reason else ""))
    report = RunReport(
        summary=Summary.of(results),
        results=results,
        host=host_fingerprint(  # L1's kernel and CPU; no QEMU or firmware runs in L1
            engine="selftest",
            qemu_binaries=[],
            kernel_release=outcome.kernel_release,
            kvm_backend="kvm_amd",
            cpu="emulated (QEMU TCG, qmpgmem lab)",
            cpu_model_name="QEMU TCG -cpu max",
            firmware=False,
        ),
    )
    s = report.summary
    click.echo(s.counts())
    from qmpgmem.report.files import write_reports

    write_reports(report, json_path, junit_path)
    raise click.exceptions.Exit(0 if report.ok else EXIT_FAILED)
