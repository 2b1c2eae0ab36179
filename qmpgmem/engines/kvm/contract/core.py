"""The framework of the kernel-contract checks: outcomes, the check registry, the
environment a check runs in, and the expectation helpers.

Why checks and not scenarios: most of the contract is about the ioctls themselves (which flags
KVM_CREATE_GUEST_MEMFD takes, what a second binding of a range gets, what fallocate accepts),
not about what a guest sees, so each check drives the kernel directly with
:mod:`qmpgmem.engines.kvm.objects`.

A result is one of:

* ``passed``   — the kernel does what upstream promises;
* ``failed``   — it does not, and nothing explains why;
* ``deviation`` — it does not, on a backend whose difference is measured and written down in
  the check (``deviations``, keyed by backend, by :func:`on_emulated_cpu` of it for what
  only an emulated CPU such as the lab's QEMU TCG does, or by :func:`kernel_before` for what
  upstream fixed in a later release); the expectation itself is never weakened;
* ``skipped``  — the host cannot run the check (the reason says what is missing).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.cpuid import vcpu_cpuid
from qmpgmem.engines.kvm.objects import PAGE_SIZE, GuestMemfd, Kvm, Mapping, Vcpu, Vm

MMAP: Final = abi.GUEST_MEMFD_FLAG_MMAP
INIT_SHARED: Final = abi.GUEST_MEMFD_FLAG_INIT_SHARED
GMEM: Final = abi.KVM_MEM_GUEST_MEMFD

SELFTEST: Final = "tools/testing/selftests/kvm/guest_memfd_test.c"
SLOTTEST: Final = "tools/testing/selftests/kvm/set_memory_region_test.c"
API: Final = "Documentation/virt/kvm/api.rst"
GMEM_C: Final = "virt/kvm/guest_memfd.c"
KVM_MAIN: Final = "virt/kvm/kvm_main.c"


class Outcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    DEVIATION = "deviation"
    SKIPPED = "skipped"


class Mismatch(Exception):
    """The kernel did something other than the expectation; the message says what."""


class Skip(Exception):
    """The host cannot run this check; the message says why."""


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: Outcome
    expectation: str
    source: str
    backend: str
    detail: str = ""
    #: wall time of the check's body
    duration_s: float = 0.0

    def __str__(self) -> str:
        text = f"{self.outcome.value:9} {self.name}"
        return f"{text}: {self.detail}" if self.detail else text


@dataclass
class Env:
    """What a check needs: the open /dev/kvm and the facts that pick its path."""

    kvm: Kvm
    backend: str
    page: int = PAGE_SIZE
    #: the CPU under KVM is emulated (QEMU TCG, as in the lab): picks the deviations keyed
    #: :func:`on_emulated_cpu` over the backend's own
    cpu_emulated: bool = False
    #: the VM type (KVM_CREATE_VM argument) a check run per VM type is for
    vm_type: int = 0
    #: the running kernel's release (``uname -r``): picks the :func:`kernel_before` deviations
    kernel_release: str = ""

    def vcpu(self, vm: Vm) -> Vcpu:
        """vCPU 0 with its CPUID set, as the kernel selftests create every vCPU
        (vm_arch_vcpu_add → vcpu_init_cpuid): KVM_SET_SREGS checks EFER against it."""
        vcpu = vm.create_vcpu(0)
        vcpu.set_cpuid(vcpu_cpuid(self.kvm.supported_cpuid()))
        return vcpu

    @contextlib.contextmanager
    def vm(self, vm_type: int | None = None) -> Iterator[Vm]:
        """A VM of ``vm_type`` (default: the type this run of the check is for)."""
        with self.kvm.create_vm(self.vm_type if vm_type is None else vm_type) as vm:
            yield vm

    def offered_flags(self, vm: Vm) -> int:
        """The guest_memfd flags ``vm`` offers; a skip where /dev/kvm has no guest_memfd.

        As guest_memfd_test.c's main(): it requires KVM_CAP_GUEST_MEMFD of /dev/kvm and then
        creates files on every VM type, whatever the VM answers (6.12's default VM says 0 and
        creates them)."""
        if self.kvm.check_extension(abi.Cap.GUEST_MEMFD) <= 0:
            raise Skip("KVM_CAP_GUEST_MEMFD is 0 on /dev/kvm")
        return vm.check_extension(abi.Cap.GUEST_MEMFD_FLAGS)

    def bindable_flags(self, vm: Vm) -> int:
        """:meth:`offered_flags`, and a skip where ``vm``'s memslots cannot take a guest_memfd:
        a VM whose KVM_CAP_GUEST_MEMFD is 0 refuses KVM_MEM_GUEST_MEMFD (kvm_main.c:
        check_memory_region_flags allows it only where the VM has private memory, as 6.12's
        default VM has not)."""
        if vm.check_extension(abi.Cap.GUEST_MEMFD) <= 0:
            raise Skip(
                f"KVM_CAP_GUEST_MEMFD is 0 on a {vm_type_name(vm.vm_type)} VM: its memslots "
                "refuse KVM_MEM_GUEST_MEMFD"
            )
        return self.offered_flags(vm)

    def shared_flags(self, vm: Vm) -> int:
        """MMAP|INIT_SHARED, or a skip when this VM type does not offer both."""
        if self.offered_flags(vm) & (MMAP | INIT_SHARED) != MMAP | INIT_SHARED:
            raise Skip(f"MMAP|INIT_SHARED is not offered on a {vm_type_name(vm.vm_type)} VM")
        return MMAP | INIT_SHARED

    def flag_sets(self, vm: Vm) -> list[int]:
        """The flag combinations the selftest walks: 0, MMAP, MMAP|INIT_SHARED (if offered)."""
        offered = self.offered_flags(vm)
        sets = [0]
        if offered & MMAP:
            sets.append(MMAP)
            if offered & INIT_SHARED:
                sets.append(MMAP | INIT_SHARED)
        return sets


def vm_type_name(vm_type: int) -> str:
    """``default``, ``sw_protected``, ...; the number for a type this tool has no name for."""
    try:
        return abi.VmType(vm_type).name.lower()
    except ValueError:
        return f"type {vm_type}"


def on_emulated_cpu(backend: str) -> str:
    """The deviation key for ``backend`` on an emulated CPU (QEMU TCG's SVM or VMX, as in the
    lab): a difference measured only there is the emulation's, not the backend's."""
    return f"{backend} on an emulated CPU"


_KERNEL_BEFORE = re.compile(r"kernels before (\d+)\.(\d+)$")


def kernel_before(version: str) -> str:
    """The deviation key for kernels older than ``version`` (``"7.2"``): upstream fixed the
    behaviour in that release, and a kernel without the fix shows the old one, whichever
    backend runs it. Keyed by the release, so a distribution kernel that backported the fix
    simply passes."""
    if not re.fullmatch(r"\d+\.\d+", version):
        raise ValueError(f"kernel_before wants MAJOR.MINOR, not {version!r}")
    return f"kernels before {version}"


def _release_tuple(release: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _applies_to_kernel(key: str, release: str) -> bool:
    m = _KERNEL_BEFORE.match(key)
    running = _release_tuple(release)
    return bool(m and running and running < (int(m.group(1)), int(m.group(2))))


@dataclass(frozen=True)
class Check:
    name: str
    expectation: str
    source: str
    body: Callable[[Env], None]
    #: backend (or :func:`on_emulated_cpu` of it, or :func:`kernel_before` a release) → the
    #: measured reason a mismatch there is a known deviation
    deviations: dict[str, str] = field(default_factory=dict)
    #: run once per VM type KVM_CAP_VM_TYPES offers, as guest_memfd_test.c's main() loops
    #: (else once, on a default VM or the type the check picks itself)
    per_vm_type: bool = False

    def result_name(self, vm_type: int) -> str:
        """The result's name: the check's own on a default VM, ``name[sw_protected]`` etc.
        for the other types of a per-VM-type check."""
        return self.name if vm_type == 0 else f"{self.name}[{vm_type_name(vm_type)}]"

    def deviation_key(self, env: Env) -> str | None:
        """Which recorded deviation applies here: the emulated-CPU one on an emulated CPU,
        else the backend's own, else a kernel-release one the running kernel predates; None
        when the check records none for this host."""
        keys = [on_emulated_cpu(env.backend)] if env.cpu_emulated else []
        keys.append(env.backend)
        keys += [k for k in self.deviations if _applies_to_kernel(k, env.kernel_release)]
        return next((k for k in keys if k in self.deviations), None)

    def run(self, env: Env) -> CheckResult:
        t0 = time.monotonic()

        def result(outcome: Outcome, detail: str = "") -> CheckResult:
            return CheckResult(
                self.result_name(env.vm_type),
                outcome,
                self.expectation,
                self.source,
                env.backend,
                detail,
                time.monotonic() - t0,
            )

        try:
            self.body(env)
        except Skip as exc:
            return result(Outcome.SKIPPED, str(exc))
        except (Mismatch, OSError) as exc:
            observed = str(exc) if isinstance(exc, Mismatch) else f"unexpected error: {exc}"
            key = self.deviation_key(env)
            if key is not None:
                reason = self.deviations[key]
                return result(Outcome.DEVIATION, f"{key}: {reason}; observed: {observed}")
            return result(Outcome.FAILED, observed)
        key = self.deviation_key(env)
        if key is not None:
            return result(Outcome.PASSED, f"the known {key} deviation did not show")
        return result(Outcome.PASSED)


CHECKS: list[Check] = []


def check(
    name: str,
    expectation: str,
    source: str,
    deviations: dict[str, str] | None = None,
    *,
    per_vm_type: bool = False,
) -> Callable[[Callable[[Env], None]], Callable[[Env], None]]:
    def register(body: Callable[[Env], None]) -> Callable[[Env], None]:
        CHECKS.append(Check(name, expectation, source, body, dict(deviations or {}), per_vm_type))
        return body

    return register


# -- helpers ---------------------------------------------------------------------------------------


def errno_name(err: int) -> str:
    return errno.errorcode.get(err, str(err))


def expect_errno(what: str, call: Callable[[], object], *allowed: int) -> None:
    """``call`` must fail with one of ``allowed`` (any errno when none is given)."""
    try:
        value = call()
    except OSError as exc:
        if allowed and exc.errno not in allowed:
            want = "/".join(errno_name(e) for e in allowed)
            raise Mismatch(f"{what} failed with {errno_name(exc.errno or 0)}, not {want}") from None
        return
    if isinstance(value, GuestMemfd | Mapping):
        value.close()
    raise Mismatch(f"{what} succeeded")


def expect_ok(what: str, call: Callable[[], object]) -> object:
    try:
        return call()
    except OSError as exc:
        raise Mismatch(f"{what} failed: {errno_name(exc.errno or 0)}") from None


def run_with_deadline(vcpu: Vcpu, seconds: float) -> int | None:
    """KVM_RUN once, kicked out after ``seconds``: the exit reason, or None if it hung."""
    from qmpgmem.engines.kvm.vcpu_thread import KICK_SIGNAL, install_kick_signal

    if not install_kick_signal():
        raise Skip("a hung KVM_RUN can only be interrupted from the main thread's signal setup")
    me = threading.get_ident()
    done = threading.Event()

    def kick() -> None:
        if not done.is_set():
            vcpu.kvm_run.immediate_exit = 1
            signal.pthread_kill(me, KICK_SIGNAL)

    timer = threading.Timer(seconds, kick)
    timer.start()
    try:
        return vcpu.run()
    except InterruptedError:
        return None
    finally:
        done.set()
        timer.cancel()
        vcpu.kvm_run.immediate_exit = 0
