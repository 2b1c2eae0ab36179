"""Kvm → Vm → Vcpu, GuestMemfd and Mapping against the real /dev/kvm."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.objects import Kvm, Mapping

from .helpers import host_lacks, needs_gmem, needs_kvm

pytestmark = needs_kvm
MIB = 1 << 20


def test_system_fd(kvm: Kvm) -> None:
    assert kvm.api_version() == abi.KVM_API_VERSION
    assert kvm.check_extension(abi.Cap.USER_MEMORY) == 1
    assert kvm.vcpu_mmap_size() >= 4096 * 2  # kvm_run page + the PIO data page
    assert len(kvm.supported_cpuid()) > 0


def test_close_is_idempotent_and_closed_objects_refuse() -> None:
    kvm = Kvm()
    fd = kvm.fd
    kvm.close()
    kvm.close()
    assert kvm.closed
    with pytest.raises(ValueError, match="closed"):
        kvm.api_version()
    with pytest.raises(OSError) as err:
        os.fstat(fd)
    assert err.value.errno == errno.EBADF


def test_vm_closes_its_vcpus(kvm: Kvm) -> None:
    vm = kvm.create_vm()
    vcpu = vm.create_vcpu(0)
    assert vcpu.get_sregs().cs.base == 0xFFFF0000  # the reset state
    assert vcpu.get_regs().rip == 0xFFF0
    vm.close()
    assert vcpu.closed and vm.closed


@needs_gmem
def test_guest_memfd_mmap_and_punch(kvm: Kvm) -> None:
    with (
        kvm.create_vm() as vm,
        vm.create_guest_memfd(
            2 * MIB, abi.GUEST_MEMFD_FLAG_MMAP | abi.GUEST_MEMFD_FLAG_INIT_SHARED
        ) as gmem,
        gmem.mmap() as mem,
    ):
        mem.write(4096, b"\x5a" * 4096)
        assert mem.read(4096, 4096) == b"\x5a" * 4096
        gmem.punch_hole(4096, 4096)
        assert mem.read(4096, 4096) == bytes(4096)
        gmem.allocate(0, 2 * MIB)
        assert os.fstat(gmem.fd).st_size == 2 * MIB


def test_errors_carry_errno(kvm: Kvm) -> None:
    """A size that is no multiple of the page: EINVAL, or ENOTTY where KVM has no guest_memfd."""
    with kvm.create_vm() as vm:
        with pytest.raises(OSError) as err:
            vm.create_guest_memfd(4095)
        assert err.value.errno == (errno.ENOTTY if host_lacks("guest_memfd") else errno.EINVAL)
        assert "ioctl" in str(err.value)


def test_mapping_bounds_and_close() -> None:
    m = Mapping.anonymous(8192)
    m.write(8190, b"ab")
    with pytest.raises(ValueError, match="outside"):
        m.read(8190, 4)
    with pytest.raises(ValueError, match="outside"):
        m.write(-1, b"x")
    m.close()
    m.close()
    with pytest.raises(ValueError, match="closed"):
        m.read(0, 1)


def mapped_bytes() -> int:
    total = 0
    for line in Path("/proc/self/maps").read_text().splitlines():
        start, end = line.split()[0].split("-")
        total += int(end, 16) - int(start, 16)
    return total


def vm_flags(addr: int) -> list[str]:
    """The VmFlags of the mapping that starts at ``addr`` (/proc/self/smaps)."""
    smaps = Path("/proc/self/smaps").read_text()
    block = smaps.split(f"{addr:x}-", 1)[1]
    return block.split("VmFlags:", 1)[1].splitlines()[0].split()


def test_huge_anonymous_mapping_is_aligned_advised_and_trimmed() -> None:
    """``huge``: on a 2 MiB boundary, MADV_HUGEPAGE ("hg"), and the huge page it
    over-allocated to align is given back (mapped bytes grow by the size alone)."""
    mapped_bytes()  # the first read's own buffers, before counting
    before = mapped_bytes()
    m = Mapping.anonymous(6 * MIB, shared=False, huge=True)
    try:
        assert mapped_bytes() - before == 6 * MIB
        assert m.addr % (2 * MIB) == 0
        assert "hg" in vm_flags(m.addr)
        m.write(6 * MIB - 1, b"x")
    finally:
        m.close()
    plain = Mapping.anonymous(6 * MIB, shared=False)  # the control: no advice without huge
    try:
        assert "hg" not in vm_flags(plain.addr)
    finally:
        plain.close()


def test_enable_cap_and_memory_region(kvm: Kvm) -> None:
    with kvm.create_vm() as vm, Mapping.anonymous(MIB) as mem:
        vm.set_user_memory_region(0, 0, MIB, mem.addr)
        vm.set_user_memory_region(0, 0, 0, mem.addr)  # size 0 deletes the slot
        hc = vm.check_extension(abi.Cap.EXIT_HYPERCALL)
        if hc:
            vm.enable_cap(abi.Cap.EXIT_HYPERCALL, hc)
        with pytest.raises(OSError) as err:
            vm.enable_cap(abi.Cap.EXIT_HYPERCALL, 1 << 63)  # not an offered hypercall
        assert err.value.errno == errno.EINVAL
