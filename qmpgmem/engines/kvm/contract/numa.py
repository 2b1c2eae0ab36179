"""NUMA policy and huge pages on a guest_memfd mapping.

Mirrors guest_memfd_test.c: test_mbind, test_numa_allocation (both need two NUMA nodes
upstream: is_multi_numa_node_system) and test_collapse; guest_memfd.c:
kvm_gmem_set_policy/kvm_gmem_get_policy (a shared policy per inode, CONFIG_NUMA). The system
calls go through libc's syscall(2): Python has no mbind, get_mempolicy or move_pages.
"""

from __future__ import annotations

import ctypes
import errno
import os
from pathlib import Path
from typing import Final

from qmpgmem.engines.kvm import sys as ksys
from qmpgmem.engines.kvm.contract.core import (
    GMEM_C,
    SELFTEST,
    Env,
    Mismatch,
    Skip,
    check,
    errno_name,
)
from qmpgmem.engines.kvm.objects import GuestMemfd, Mapping

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# arch/x86/entry/syscalls/syscall_64.tbl
SYS_MBIND: Final = 237
SYS_GET_MEMPOLICY: Final = 239
SYS_MOVE_PAGES: Final = 279
# include/uapi/linux/mempolicy.h
MPOL_DEFAULT: Final = 0
MPOL_BIND: Final = 2
MPOL_INTERLEAVE: Final = 3
MPOL_F_ADDR: Final = 1 << 1
# include/uapi/asm-generic/mman-common.h
MADV_HUGEPAGE: Final = 14
MADV_COLLAPSE: Final = 25
PROT_NONE: Final = 0
MAP_FIXED: Final = 0x10


_mmap_fixed = ctypes.CDLL(None, use_errno=True).mmap
_mmap_fixed.restype = ctypes.c_void_p
_mmap_fixed.argtypes = (
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_int,
    ctypes.c_long,
)


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def mbind(addr: int, length: int, mode: int, nodemask: int, maxnode: int = 64) -> None:
    mask = ctypes.c_ulong(nodemask)
    args = (ctypes.c_void_p(addr), ctypes.c_ulong(length), ctypes.c_int(mode))
    mask_arg = ctypes.byref(mask) if nodemask else None
    ret = _syscall(SYS_MBIND, *args, mask_arg, ctypes.c_ulong(maxnode if nodemask else 0), 0)
    _check(ret, f"mbind mode {mode}")


def get_mempolicy(addr: int, maxnode: int = 64) -> tuple[int, int]:
    """(policy, nodemask) of the page at ``addr`` (MPOL_F_ADDR)."""
    policy, mask = ctypes.c_int(-1), ctypes.c_ulong(0)
    ret = _syscall(
        SYS_GET_MEMPOLICY,
        ctypes.byref(policy),
        ctypes.byref(mask),
        ctypes.c_ulong(maxnode),
        ctypes.c_void_p(addr),
        ctypes.c_ulong(MPOL_F_ADDR),
    )
    _check(ret, "get_mempolicy")
    return policy.value, mask.value


def page_nodes(addrs: list[int]) -> list[int]:
    """move_pages(0, n, pages, NULL, status, 0): the node of each page (or -errno)."""
    n = len(addrs)
    pages = (ctypes.c_void_p * n)(*addrs)
    status = (ctypes.c_int * n)()
    ret = _syscall(SYS_MOVE_PAGES, 0, ctypes.c_ulong(n), pages, None, status, 0)
    _check(ret, "move_pages")
    return list(status)


def numa_nodes() -> list[int]:
    """The online NUMA nodes (/sys/devices/system/node/online, e.g. "0-1")."""
    text = Path("/sys/devices/system/node/online").read_text().strip()
    nodes: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        nodes += range(int(lo), int(hi or lo) + 1)
    return nodes


def _needs_numa_syscalls() -> None:
    try:
        _check(_syscall(SYS_GET_MEMPOLICY, None, None, 0, None, 0), "get_mempolicy")
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            raise Skip("this kernel has no NUMA system calls (CONFIG_NUMA off)") from None
        raise


def _two_nodes() -> None:
    nodes = numa_nodes()
    if not {0, 1} <= set(nodes):
        raise Skip(
            f"needs NUMA nodes 0 and 1, as upstream (is_multi_numa_node_system); this host has "
            f"node(s) {','.join(map(str, nodes))} (the lab gives L1 two with --l1-numa 2)"
        )


@check(
    "numa.mbind",
    "on a MAP_SHARED mapping of an MMAP|INIT_SHARED guest_memfd, mbind MPOL_INTERLEAVE and "
    "MPOL_BIND to node 0 are what get_mempolicy(MPOL_F_ADDR) reads back (with nodemask 0x1), "
    "MPOL_DEFAULT over the file reads back MPOL_DEFAULT with an empty nodemask, and policy 999 "
    "fails with EINVAL",
    f"{SELFTEST}: test_mbind; {GMEM_C}: kvm_gmem_set_policy, kvm_gmem_get_policy",
    per_vm_type=True,
)
def _mbind(env: Env) -> None:
    _needs_numa_syscalls()
    _two_nodes()
    p = env.page
    with env.vm() as vm, vm.create_guest_memfd(4 * p, env.shared_flags(vm)) as g, g.mmap() as m:
        for what, off, mode in (
            ("MPOL_INTERLEAVE", 0, MPOL_INTERLEAVE),
            ("MPOL_BIND", 2, MPOL_BIND),
        ):
            mbind(m.addr + off * p, 2 * p, mode, 1)
            got = get_mempolicy(m.addr + off * p)
            if got != (mode, 1):
                raise Mismatch(f"after {what} get_mempolicy gives {got}, not ({mode}, 0x1)")
        mbind(m.addr, 4 * p, MPOL_DEFAULT, 0)
        got = get_mempolicy(m.addr)
        if got != (MPOL_DEFAULT, 0):
            raise Mismatch(f"after MPOL_DEFAULT get_mempolicy gives {got}, not (0, 0x0)")
        try:
            mbind(m.addr, p, 999, 1)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise Mismatch(f"policy 999 failed with {errno_name(exc.errno or 0)}") from None
        else:
            raise Mismatch("mbind with policy 999 succeeded")


@check(
    "numa.allocation",
    "pages of an MMAP|INIT_SHARED guest_memfd are allocated on the node their mbind MPOL_BIND "
    "names when first touched (pages 0-1 on node 1, 2-3 on node 0, as move_pages reports), a "
    "policy set after allocation does not move an allocated page, and after a punch of the "
    "whole file and new policies (swapped nodes) the re-faulted pages follow the new ones",
    f"{SELFTEST}: test_numa_allocation; {GMEM_C}: kvm_gmem_get_policy (the inode's shared "
    "policy decides the folio's node)",
    per_vm_type=True,
)
def _numa_allocation(env: Env) -> None:
    _needs_numa_syscalls()
    _two_nodes()
    p = env.page
    with env.vm() as vm, vm.create_guest_memfd(4 * p, env.shared_flags(vm)) as g, g.mmap() as m:
        pages = [m.addr + i * p for i in range(4)]
        m.write(0, b"\xaa" * p)  # allocated first, policy after
        mbind(pages[0], p, MPOL_BIND, 0b01)
        g.punch_hole(0, p)
        for first, second in ((0b10, 0b01), (0b01, 0b10)):
            mbind(pages[0], 2 * p, MPOL_BIND, first)
            mbind(pages[2], 2 * p, MPOL_BIND, second)
            m.write(0, b"\xaa" * (4 * p))
            want = [first.bit_length() - 1] * 2 + [second.bit_length() - 1] * 2
            got = page_nodes(pages)
            if got != want:
                raise Mismatch(f"move_pages reports nodes {got}, not {want}")
            g.punch_hole(0, 4 * p)


def _thp_size() -> int:
    try:
        return int(Path("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size").read_text())
    except (OSError, ValueError):
        raise Skip("no transparent huge pages here (hpage_pmd_size)") from None


def _pmd_aligned_mapping(g: GuestMemfd, pmd: int) -> tuple[Mapping, int]:
    """A PROT_NONE reservation of 2 PMDs and, MAP_FIXED at its first PMD boundary, the
    file's first PMD (offset 0): (the reservation, the aligned address)."""
    reserved = Mapping(
        ksys.mmap(2 * pmd, PROT_NONE, ksys.MAP_PRIVATE | ksys.MAP_ANONYMOUS), 2 * pmd
    )
    aligned = (reserved.addr + pmd - 1) & ~(pmd - 1)
    prot, flags = ksys.PROT_READ | ksys.PROT_WRITE, MAP_FIXED | ksys.MAP_SHARED
    addr = _mmap_fixed(aligned, pmd, prot, flags, g.fd, 0)
    if addr != aligned:
        reserved.close()
        raise Mismatch(f"MAP_FIXED mapping of the file at {aligned:#x} gave {addr}")
    return reserved, aligned


@check(
    "hugepage.collapse",
    "on a PMD-aligned mapping of a PMD-sized MMAP|INIT_SHARED guest_memfd (read-faulted page "
    "by page), MADV_HUGEPAGE succeeds, MADV_COLLAPSE fails with EINVAL (no huge folio may map "
    "beyond shared ranges), MADV_DONTNEED succeeds and the page faults in again",
    f"{SELFTEST}: test_collapse",
    per_vm_type=True,
)
def _collapse(env: Env) -> None:
    pmd = _thp_size()
    with env.vm() as vm, vm.create_guest_memfd(pmd, env.shared_flags(vm)) as g:
        reserved, addr = _pmd_aligned_mapping(g, pmd)
        with reserved:
            for off in range(0, pmd, env.page):
                ksys.read_at(addr + off, 1)
            try:
                ksys.madvise(addr, pmd, MADV_HUGEPAGE)
            except OSError as exc:
                raise Mismatch(f"MADV_HUGEPAGE failed: {errno_name(exc.errno or 0)}") from None
            try:
                ksys.madvise(addr, pmd, MADV_COLLAPSE)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    why = errno_name(exc.errno or 0)
                    raise Mismatch(f"MADV_COLLAPSE failed with {why}, not EINVAL") from None
            else:
                raise Mismatch("MADV_COLLAPSE succeeded")
            ksys.madvise(addr, pmd, ksys.MADV_DONTNEED)
            ksys.read_at(addr, 1)
