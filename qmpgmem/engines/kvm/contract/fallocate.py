"""fallocate(2) on a guest_memfd: allocation, PUNCH_HOLE, the modes it refuses.

Mirrors guest_memfd_test.c: test_fallocate, test_invalid_punch_hole; guest_memfd.c:
kvm_gmem_fallocate, kvm_gmem_allocate decide the errnos.
"""

from __future__ import annotations

import errno
from functools import partial
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm import sys as ksys
from qmpgmem.engines.kvm.contract.core import (
    GMEM_C,
    SELFTEST,
    Env,
    Mismatch,
    check,
    expect_errno,
    expect_ok,
)

# -- fallocate -------------------------------------------------------------------------------------


KEEP: Final = abi.FALLOC_FL_KEEP_SIZE
PUNCH: Final = abi.FALLOC_FL_PUNCH_HOLE
ZERO_RANGE: Final = 0x10  # include/uapi/linux/falloc.h: FALLOC_FL_ZERO_RANGE

#: test_fallocate's sequence on a file of 4 pages, in pages (P = one page; an offset or
#: length given as P - 1 is unaligned): (what, mode, offset, length, errno or 0 for success)
RANGES: Final[list[tuple[str, int, float, float, int]]] = [
    ("allocate all", KEEP, 0, 4, 0),
    ("punch at an unaligned offset", KEEP | PUNCH, 0.5, 1, errno.EINVAL),
    ("allocate at the end", KEEP, 4, 1, errno.EINVAL),
    ("allocate past the end", KEEP, 5, 1, errno.EINVAL),
    ("allocate across the end", KEEP, 3, 2, errno.EINVAL),
    ("punch at the end", KEEP | PUNCH, 4, 1, 0),
    ("punch past the end", KEEP | PUNCH, 5, 1, 0),
    ("punch with an unaligned length", KEEP | PUNCH, 1, 0.5, errno.EINVAL),
    ("punch one page", KEEP | PUNCH, 1, 1, 0),
    ("allocate the punched page", KEEP, 1, 1, 0),
]


def _pages(env: Env, n: float) -> int:
    return int(n * env.page) if n == int(n) else int(n) * env.page + env.page - 1


@check(
    "fallocate.ranges",
    "allocation (KEEP_SIZE) inside the file succeeds, at, past or across its end fails with "
    "EINVAL; PUNCH_HOLE at or past the end succeeds; an unaligned offset or length fails with "
    "EINVAL; a punched page can be allocated again (for each flag set)",
    f"{SELFTEST}: test_fallocate; {GMEM_C}: kvm_gmem_fallocate (!PAGE_ALIGNED: -EINVAL), "
    "kvm_gmem_allocate (offset + len > i_size: -EINVAL)",
    per_vm_type=True,
)
def _fallocate_ranges(env: Env) -> None:
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            with vm.create_guest_memfd(4 * env.page, flags) as g:
                for what, mode, off, length, err in RANGES:
                    call = partial(
                        ksys.fallocate, g.fd, mode, _pages(env, off), _pages(env, length)
                    )
                    tag = f"{what} (flags {flags:#x})"
                    if err:
                        expect_errno(tag, call, err)
                    else:
                        expect_ok(tag, call)


@check(
    "fallocate.invalid_punch",
    "PUNCH_HOLE with an offset or length that is not page aligned fails with EINVAL",
    f"{SELFTEST}: test_invalid_punch_hole",
    per_vm_type=True,
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


#: fallocate calls refused whatever the range: (what, mode, offset, length in pages, errno).
#: The VFS decides first (fs/open.c: vfs_fallocate: len <= 0 or offset < 0 is -EINVAL,
#: PUNCH_HOLE without KEEP_SIZE -EOPNOTSUPP), then kvm_gmem_fallocate (no KEEP_SIZE, or a
#: mode other than KEEP_SIZE|PUNCH_HOLE: -EOPNOTSUPP).
MODES: Final[list[tuple[str, int, int, int, int]]] = [
    ("mode 0 (allocate and grow)", 0, 0, 1, errno.EOPNOTSUPP),
    ("PUNCH_HOLE without KEEP_SIZE", PUNCH, 0, 1, errno.EOPNOTSUPP),
    ("ZERO_RANGE|KEEP_SIZE", ZERO_RANGE | KEEP, 0, 1, errno.EOPNOTSUPP),
    ("allocate with length 0", KEEP, 0, 0, errno.EINVAL),
    ("punch with length 0", KEEP | PUNCH, 0, 0, errno.EINVAL),
    ("allocate at offset -1 page", KEEP, -1, 1, errno.EINVAL),
]


@check(
    "fallocate.modes",
    "fallocate without FALLOC_FL_KEEP_SIZE (also PUNCH_HOLE alone), or with a mode bit other "
    "than KEEP_SIZE and PUNCH_HOLE, fails with EOPNOTSUPP (a guest_memfd cannot grow); a "
    "length of 0 or a negative offset fails with EINVAL",
    f"{GMEM_C}: kvm_gmem_fallocate; fs/open.c: vfs_fallocate",
    per_vm_type=True,
)
def _fallocate_modes(env: Env) -> None:
    with env.vm() as vm:
        env.offered_flags(vm)
        with vm.create_guest_memfd(4 * env.page) as g:
            for what, mode, off, length, err in MODES:
                call = partial(ksys.fallocate, g.fd, mode, off * env.page, length * env.page)
                expect_errno(what, call, err)


@check(
    "fallocate.punch_patterns",
    "with MMAP|INIT_SHARED: punching the whole file makes every page read zeros; punching "
    "every odd page zeroes exactly those and keeps the even ones, then the even ones likewise; "
    "each punched page can be written again. Without MMAP the same punches of allocated "
    "(private) memory succeed",
    f"{GMEM_C}: kvm_gmem_punch_hole (truncate_inode_pages_range of the range); {SELFTEST}: "
    "test_mmap_supported (one page); x86/private_mem_conversions_test.c: guest_test_punch_hole "
    "(the whole range)",
    per_vm_type=True,
)
def _punch_patterns(env: Env) -> None:
    p, n = env.page, 8
    with env.vm() as vm:
        for flags in env.flag_sets(vm):
            with vm.create_guest_memfd(n * p, flags) as g:
                tag = f"(flags {flags:#x})"
                if not flags & abi.GUEST_MEMFD_FLAG_INIT_SHARED:
                    expect_ok(f"allocate all {tag}", partial(g.allocate, 0, n * p))
                    expect_ok(f"punch all {tag}", partial(g.punch_hole, 0, n * p))
                    expect_ok(f"allocate all again {tag}", partial(g.allocate, 0, n * p))
                    for first in (1, 0):
                        for i in range(first, n, 2):
                            expect_ok(f"punch page {i} {tag}", partial(g.punch_hole, i * p, p))
                    continue
                with g.mmap() as m:
                    m.write(0, b"\xaa" * (n * p))
                    g.punch_hole(0, n * p)
                    if m.read(0, n * p) != bytes(n * p):
                        raise Mismatch("after punching the whole file some page is not zeros")
                    m.write(0, b"\xaa" * (n * p))
                    for first in (1, 0):
                        for i in range(first, n, 2):
                            g.punch_hole(i * p, p)
                        for i in range(n):
                            want = b"\0" if i % 2 == first or first == 0 else b"\xaa"
                            if m.read(i * p, p) != want * p:
                                raise Mismatch(
                                    f"after punching the {'odd' if first else 'even'} pages, "
                                    f"page {i} reads {m.read(i * p, 1)!r}..."
                                )
                    m.write(0, b"\x5a" * (n * p))
                    if m.read(0, n * p) != b"\x5a" * (n * p):
                        raise Mismatch("the punched pages could not be written again")
