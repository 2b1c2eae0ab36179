"""fallocate(2) on a guest_memfd: allocation, PUNCH_HOLE, the modes it refuses.

Mirrors guest_memfd_test.c: test_fallocate, test_invalid_punch_hole; guest_memfd.c:
kvm_gmem_fallocate, kvm_gmem_allocate decide the errnos.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from functools import partial

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.contract.core import GMEM_C, SELFTEST, Env, check, expect_errno, expect_ok

# -- fallocate -------------------------------------------------------------------------------------


@check(
    "fallocate.ranges",
    "allocation (KEEP_SIZE) inside the file succeeds and at or past its end fails; PUNCH_HOLE "
    "at or past the end succeeds; an unaligned offset or length fails; a punched page can be "
    "allocated again",
    f"{SELFTEST}: test_fallocate",
)
def _fallocate_ranges(env: Env) -> None:
    p, keep, punch = env.page, abi.FALLOC_FL_KEEP_SIZE, abi.FALLOC_FL_PUNCH_HOLE
    from qmpgmem.engines.kvm import sys as ksys

    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            total = 4 * p
            with vm.create_guest_memfd(total, flags) as g:
                fd = g.fd

                def fa(mode: int, off: int, length: int, fd: int = fd) -> Callable[[], None]:
                    return lambda: ksys.fallocate(fd, mode, off, length)

                tag = f"(flags {flags:#x})"
                expect_ok(f"allocate all {tag}", fa(keep, 0, total))
                expect_errno(f"punch at unaligned offset {tag}", fa(keep | punch, p - 1, p))
                expect_errno(f"allocate at the end {tag}", fa(keep, total, p))
                expect_errno(f"allocate past the end {tag}", fa(keep, total + p, p))
                expect_ok(f"punch at the end {tag}", fa(keep | punch, total, p))
                expect_ok(f"punch past the end {tag}", fa(keep | punch, total + p, p))
                expect_errno(f"punch with unaligned length {tag}", fa(keep | punch, p, p - 1))
                expect_ok(f"punch one page {tag}", fa(keep | punch, p, p))
                expect_ok(f"allocate the punched page {tag}", fa(keep, p, p))


@check(
    "fallocate.invalid_punch",
    "PUNCH_HOLE with an offset or length that is not page aligned fails with EINVAL",
    f"{SELFTEST}: test_invalid_punch_hole",
)
def _invalid_punch(env: Env) -> None:
    p = env.page
    cases = [(0, 1), (0, p - 1), (0, p + 1), (1, 1), (1, p - 1), (1, p), (1, p + 1)]
    cases += [(p, 1), (p, p - 1), (p, p + 1)]
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            with vm.create_guest_memfd(4 * p, flags) as g:
                for off, length in cases:
                    expect_errno(
                        f"punch {off:#x}+{length:#x} (flags {flags:#x})",
                        partial(g.punch_hole, off, length),
                        errno.EINVAL,
                    )


@check(
    "fallocate.modes",
    "fallocate without FALLOC_FL_KEEP_SIZE, or with any mode bit other than KEEP_SIZE and "
    "PUNCH_HOLE, fails with EOPNOTSUPP (a guest_memfd cannot grow)",
    f"{GMEM_C}: kvm_gmem_fallocate",
)
def _fallocate_modes(env: Env) -> None:
    from qmpgmem.engines.kvm import sys as ksys

    zero_range = 0x10  # FALLOC_FL_ZERO_RANGE
    with env.vm() as vm, vm.create_guest_memfd(4 * env.page) as g:
        expect_errno("mode 0", lambda: ksys.fallocate(g.fd, 0, 0, env.page), errno.EOPNOTSUPP)
        expect_errno(
            "ZERO_RANGE|KEEP_SIZE",
            lambda: ksys.fallocate(g.fd, zero_range | abi.FALLOC_FL_KEEP_SIZE, 0, env.page),
            errno.EOPNOTSUPP,
        )
