"""Each kernel-contract check runs for real; the result logic is tested on its own."""

from __future__ import annotations

import pytest

from qmpgmem.engines.kvm import abi, contract, longmode
from qmpgmem.engines.kvm.backend import kvm_backend
from qmpgmem.engines.kvm.contract import (
    CHECKS,
    Check,
    Env,
    Mismatch,
    Outcome,
    Skip,
    kernel_before,
    on_emulated_cpu,
)
from qmpgmem.engines.kvm.objects import Kvm
from qmpgmem.host.cpu import cpu_kind
from qmpgmem.hostinfo import kernel_release

from .helpers import needs_kvm


@needs_kvm
@pytest.mark.parametrize("chk", CHECKS, ids=[c.name for c in CHECKS])
def test_check_against_this_kernel(chk: Check) -> None:
    backend = kvm_backend()
    with Kvm() as kvm:
        env = Env(kvm, backend, cpu_emulated=cpu_kind().emulated, kernel_release=kernel_release())
        result = chk.run(env)
    assert result.name == chk.name and result.backend == backend
    if result.outcome is Outcome.SKIPPED:
        assert result.detail, "a skip must say why"
        return
    if result.outcome is Outcome.DEVIATION:
        # only a deviation the check documents for this host, and it names its key
        key = chk.deviation_key(env)
        assert key is not None and (key.startswith(backend) or key.startswith("kernels before"))
        assert result.detail.startswith(f"{key}: ")
        return
    assert result.outcome is Outcome.PASSED, result.detail


def test_checks_are_named_and_sourced() -> None:
    names = [c.name for c in CHECKS]
    assert len(names) == len(set(names))
    for c in CHECKS:
        assert c.expectation and c.source
        assert "." in c.name


def _run(
    body: object,
    deviations: dict[str, str] | None = None,
    backend: str = "kvm_x",
    emulated: bool = False,
    release: str = "",
) -> object:
    chk = Check("t.x", "upstream says so", "api.rst", body, deviations or {})  # type: ignore[arg-type]
    env = Env(kvm=None, backend=backend, cpu_emulated=emulated, kernel_release=release)  # type: ignore[arg-type]
    return chk.run(env)


def _mismatch(env: Env) -> None:
    raise Mismatch("saw something else")


def _oserror(env: Env) -> None:
    raise FileNotFoundError(2, "gone")


def _skip(env: Env) -> None:
    raise Skip("no such feature")


def _ok(env: Env) -> None:
    pass


def test_mismatch_is_a_failure_unless_the_backend_deviation_is_known() -> None:
    r = _run(_mismatch)
    assert r.outcome is Outcome.FAILED and r.detail == "saw something else"  # type: ignore[attr-defined]
    r = _run(_mismatch, {"kvm_other": "why"})
    assert r.outcome is Outcome.FAILED  # type: ignore[attr-defined]
    r = _run(_mismatch, {"kvm_x": "measured reason"})
    assert r.outcome is Outcome.DEVIATION  # type: ignore[attr-defined]
    assert r.detail == "kvm_x: measured reason; observed: saw something else"  # type: ignore[attr-defined]


def test_unexpected_errors_fail_and_skips_keep_their_reason() -> None:
    r = _run(_oserror)
    assert r.outcome is Outcome.FAILED and "unexpected error" in r.detail  # type: ignore[attr-defined]
    r = _run(_skip)
    assert r.outcome is Outcome.SKIPPED and r.detail == "no such feature"  # type: ignore[attr-defined]


def test_a_pass_notes_a_deviation_that_did_not_show() -> None:
    r = _run(_ok, {"kvm_x": "reason"})
    assert r.outcome is Outcome.PASSED and "did not show" in r.detail  # type: ignore[attr-defined]
    assert _run(_ok).detail == ""  # type: ignore[attr-defined]


def test_expect_helpers() -> None:
    contract.expect_errno("x", lambda: (_ for _ in ()).throw(OSError(22, "inval")), 22)
    with pytest.raises(Mismatch, match="succeeded"):
        contract.expect_errno("x", lambda: None)
    with pytest.raises(Mismatch, match="EPERM, not EINVAL"):
        contract.expect_errno("x", lambda: (_ for _ in ()).throw(OSError(1, "perm")), 22)
    with pytest.raises(Mismatch, match="failed: ENOENT"):
        contract.expect_ok("x", lambda: (_ for _ in ()).throw(OSError(2, "noent")))


# -- deviations keyed to an emulated CPU -----------------------------------------------------------


def test_an_emulated_cpu_deviation_applies_only_on_an_emulated_cpu() -> None:
    devs = {on_emulated_cpu("kvm_x"): "the emulator skips it"}
    r = _run(_mismatch, devs, emulated=True)
    assert r.outcome is Outcome.DEVIATION  # type: ignore[attr-defined]
    assert r.detail == (  # type: ignore[attr-defined]
        "kvm_x on an emulated CPU: the emulator skips it; observed: saw something else"
    )
    # the same backend on a real CPU, or another backend on an emulated one: a failure
    assert _run(_mismatch, devs).outcome is Outcome.FAILED  # type: ignore[attr-defined]
    r = _run(_mismatch, devs, backend="kvm_y", emulated=True)
    assert r.outcome is Outcome.FAILED  # type: ignore[attr-defined]
    r = _run(_ok, devs, emulated=True)
    assert "kvm_x on an emulated CPU deviation did not show" in r.detail  # type: ignore[attr-defined]


def test_the_emulated_cpu_key_wins_and_the_backend_key_still_applies() -> None:
    both = {"kvm_x": "backend reason", on_emulated_cpu("kvm_x"): "emulator reason"}
    r = _run(_mismatch, both, emulated=True)
    assert r.detail.startswith("kvm_x on an emulated CPU: emulator reason")  # type: ignore[attr-defined]
    r = _run(_mismatch, {"kvm_x": "backend reason"}, emulated=True)
    assert r.detail.startswith("kvm_x: backend reason")  # type: ignore[attr-defined]


# -- deviations keyed to kernels before an upstream fix ------------------------------------------


@pytest.mark.parametrize(
    ("release", "outcome"),
    [
        ("6.12.118-amd64", Outcome.DEVIATION),
        ("7.1.9", Outcome.DEVIATION),
        ("7.2.0-rc1", Outcome.FAILED),
        ("7.2.13-amd64", Outcome.FAILED),
        ("10.0.0", Outcome.FAILED),
        ("", Outcome.FAILED),  # an unknown release is never taken for an old one
    ],
)
def test_a_kernel_before_deviation_applies_only_to_older_releases(
    release: str, outcome: Outcome
) -> None:
    r = _run(_mismatch, {kernel_before("7.2"): "fixed in 7.2"}, release=release)
    assert r.outcome is outcome, r  # type: ignore[attr-defined]
    if outcome is Outcome.DEVIATION:
        assert r.detail.startswith("kernels before 7.2: fixed in 7.2; observed:")  # type: ignore[attr-defined]


def test_the_backend_key_wins_over_a_kernel_key() -> None:
    devs = {kernel_before("7.2"): "kernel reason", "kvm_x": "backend reason"}
    r = _run(_mismatch, devs, release="6.18.0")
    assert r.detail.startswith("kvm_x: backend reason")  # type: ignore[attr-defined]


def test_kernel_before_wants_major_minor() -> None:
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
        kernel_before("7")


def _by_name(name: str) -> Check:
    return next(c for c in CHECKS if c.name == name)


def test_readonly_descriptor_records_the_tcg_svm_deviation_narrowly() -> None:
    chk = _by_name("memslot.readonly_descriptor")
    reason = chk.deviations[on_emulated_cpu("kvm_amd")]
    assert "seen only on QEMU TCG's SVM" in reason and "helper_ljmp_protected" in reason
    assert "kvm_amd" not in chk.deviations and "kvm_intel" not in chk.deviations


@needs_kvm
@pytest.mark.parametrize(
    ("backend", "emulated"), [("kvm_intel", False), ("kvm_intel", True), ("kvm_amd", False)]
)
def test_readonly_descriptor_still_fails_off_the_emulated_kvm_amd(
    backend: str, emulated: bool
) -> None:
    """Wherever this host's behaviour (a hang on kvm_pvm, an exit-less run on TCG) is not the
    recorded deviation, the check fails: the expectation is not weakened."""
    if kvm_backend() != "kvm_pvm":
        pytest.skip("needs a host where memslot.readonly_descriptor mismatches (kvm_pvm)")
    with Kvm() as kvm:
        result = _by_name("memslot.readonly_descriptor").run(
            Env(kvm, backend, cpu_emulated=emulated)
        )
    assert result.outcome is Outcome.FAILED, result.detail
    assert "KVM_RUN did not return" in result.detail


# -- bind.same_range_twice: EEXIST upstream, EINVAL measured on kvm_pvm ----------------------------


def test_same_range_twice_expects_eexist_with_its_source() -> None:
    chk = _by_name("bind.same_range_twice")
    assert "(EEXIST)" in chk.expectation
    assert "kvm_gmem_bind" in chk.source and "7.2" in chk.source and "-EINVAL" in chk.source
    assert "EINVAL" in chk.deviations["kvm_pvm"]
    assert set(chk.deviations) == {"kvm_pvm"}


@needs_kvm
def test_same_range_twice_fails_where_einval_is_not_a_recorded_deviation() -> None:
    chk = _by_name("bind.same_range_twice")
    with Kvm() as kvm:
        here = chk.run(Env(kvm, kvm_backend()))
        other = chk.run(Env(kvm, "kvm_intel"))
    if here.outcome is Outcome.SKIPPED:
        pytest.skip(f"the check cannot run on this host: {here.detail}")
    if here.outcome is Outcome.PASSED and not here.detail:
        assert other.outcome is Outcome.PASSED  # a kernel with the 7.2 errno: nothing to show
        return
    assert here.outcome is Outcome.DEVIATION and here.detail.startswith("kvm_pvm: ")
    assert "failed with EINVAL, not EEXIST" in here.detail
    assert other.outcome is Outcome.FAILED
    assert other.detail == "the same range at another GPA failed with EINVAL, not EEXIST"


# -- the vCPU's CPUID comes before its long-mode registers -----------------------------------------


class _RecordingVcpu:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def set_cpuid(self, entries: object) -> None:
        self.calls.append("set_cpuid")

    def get_sregs(self) -> abi.kvm_sregs:
        self.calls.append("get_sregs")
        return abi.kvm_sregs()

    def set_sregs(self, sregs: abi.kvm_sregs) -> None:
        self.calls.append("set_sregs")

    def set_regs(self, regs: abi.kvm_regs) -> None:
        self.calls.append("set_regs")


def test_enter_user_long_mode_sets_the_cpuid_first() -> None:
    vcpu = _RecordingVcpu()
    entries = (abi.kvm_cpuid_entry2 * 1)()
    longmode.enter_user_long_mode(vcpu, 0x10000, 0x80000, cpuid=entries)  # type: ignore[arg-type]
    assert vcpu.calls == ["set_cpuid", "get_sregs", "set_sregs", "set_regs"]
    vcpu = _RecordingVcpu()
    longmode.enter_user_long_mode(vcpu, 0x10000, 0x80000)  # type: ignore[arg-type]
    assert "set_cpuid" not in vcpu.calls


@needs_kvm
def test_env_vcpu_has_long_mode_in_its_cpuid() -> None:
    """What kvm_intel/kvm_amd need before EFER.LME/LMA (x86.c: __kvm_valid_efer): CPUID
    0x80000001 EDX[29] (LM) in the vCPU's CPUID; Env.vcpu sets KVM's supported CPUID."""
    with Kvm() as kvm, kvm.create_vm() as vm:
        supported = kvm.supported_cpuid()
        ext = [e for e in supported if e.function == 0x80000001]
        assert ext and ext[0].edx & (1 << 29), "KVM offers no long mode here"
        vcpu = Env(kvm, kvm_backend()).vcpu(vm)
        longmode.enter_user_long_mode(vcpu, longmode.FREE_GPA, 0x80000)
        sregs = vcpu.get_sregs()
        assert sregs.efer & longmode.EFER_LMA and sregs.cs.l == 1


@needs_kvm
@pytest.mark.parametrize("cpl", [0, 3])
def test_upstream_gmem_guest_names_the_first_wrong_byte(cpl: int) -> None:
    """The guest of guest.upstream_gmem_guest really checks the page: a host fill other
    than 0xaa fails with the offset and the byte (at CPL0 on kvm_pvm the emulated access
    exits to userspace first, which the check also reports as a mismatch)."""
    from qmpgmem.engines.kvm.contract.guest import upstream_gmem_guest

    with Kvm() as kvm:
        env = Env(kvm, kvm_backend(), cpu_emulated=cpu_kind().emulated)
        try:
            upstream_gmem_guest(env, fill=0xAB, cpl=cpl)
        except Skip as skip:
            pytest.skip(f"the check cannot run on this host: {skip}")
        except Mismatch as mismatch:
            err = str(mismatch)
        else:
            pytest.fail("a fill of 0xab was not reported")
    if cpl == 0 and kvm_backend() == "kvm_pvm":
        assert "KVM_EXIT_MMIO at GPA 0x100000000" in err
    else:
        assert "found 0xab at offset 0, not 0xaa" in err
