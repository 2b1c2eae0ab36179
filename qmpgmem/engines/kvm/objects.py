"""The KVM file-descriptor tree as Python objects: ``Kvm`` → ``Vm`` → ``Vcpu``, ``GuestMemfd``.

Why objects and not bare fds: each owns exactly one kernel resource (an fd, or a mapping) and
releases it in ``close()`` — idempotent, also used by ``__exit__`` — so the engine and the
kernel-contract checks can stack them in an :class:`contextlib.ExitStack` and never leak one,
whatever fails. No C type appears outside this module and :mod:`.abi`.

A :class:`Vm` closes the vCPUs it created when it is closed (a vCPU is useless without its
VM); a :class:`GuestMemfd` is left to its owner, because a guest_memfd may legitimately
outlive its VM (a kernel-contract check does exactly that).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
from types import TracebackType
from typing import Self

from qmpgmem.engines.kvm import abi, sys

DEV_KVM = "/dev/kvm"
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
#: The size of a PMD mapping on x86-64, the transparent huge page KVM can map in one fault.
HUGE_PAGE_SIZE = 2 << 20


class _Fd:
    """An owned file descriptor with an idempotent close and a context manager."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise ValueError(f"{type(self).__name__} is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:  # last resort; owners close explicitly
        if getattr(self, "_fd", -1) >= 0:
            self.close()


class Mapping:
    """One mmap(2)'d range, unmapped by ``close()``. Reads and writes copy (bounds-checked)."""

    def __init__(self, addr: int, size: int) -> None:
        self.addr = addr
        self.size = size

    @classmethod
    def anonymous(cls, size: int, *, shared: bool = True, huge: bool = False) -> Mapping:
        """``huge``: start on a 2 MiB boundary and advise MADV_HUGEPAGE, as QEMU does with
        its RAM blocks, so that the kernel may back the range with transparent huge pages
        and KVM may map each of them into the guest in one fault (see :meth:`advise_huge`)."""
        flags = (sys.MAP_SHARED if shared else sys.MAP_PRIVATE) | sys.MAP_ANONYMOUS
        flags |= sys.MAP_NORESERVE
        prot = sys.PROT_READ | sys.PROT_WRITE
        if not huge or size < HUGE_PAGE_SIZE:
            return cls(sys.mmap(size, prot, flags), size)
        # over-allocate by one huge page, then give back what lies outside the aligned range
        span = size + HUGE_PAGE_SIZE
        raw = sys.mmap(span, prot, flags)
        addr = -(-raw // HUGE_PAGE_SIZE) * HUGE_PAGE_SIZE
        if addr > raw:
            sys.munmap(raw, addr - raw)
        if raw + span > addr + size:
            sys.munmap(addr + size, raw + span - (addr + size))
        mapping = cls(addr, size)
        mapping.advise_huge()
        return mapping

    def advise_huge(self) -> None:
        """MADV_HUGEPAGE over the whole mapping, as QEMU advises every RAM block.

        Why: a host that allows transparent huge pages only where advised (``madvise`` in
        /sys/kernel/mm/transparent_hugepage/enabled, or ``advise`` in shmem_enabled for
        memfds) then gives the engine's guest RAM the same pages as QEMU's, and the guest's
        first touch of 64 MiB costs 32 faults instead of 16,384 (docs/performance.md). It
        is advice: a kernel that refuses it (built without transparent huge pages: EINVAL)
        leaves the mapping as it was, and so does the engine.
        """
        with contextlib.suppress(OSError):
            sys.madvise(self.addr, self.size, sys.MADV_HUGEPAGE)

    @classmethod
    def of_fd(cls, fd: int, size: int, offset: int = 0, *, writable: bool = True) -> Mapping:
        prot = sys.PROT_READ | (sys.PROT_WRITE if writable else 0)
        return cls(sys.mmap(size, prot, sys.MAP_SHARED, fd, offset), size)

    @property
    def closed(self) -> bool:
        return self.addr == 0

    def _check(self, offset: int, size: int) -> int:
        if self.addr == 0:
            raise ValueError("mapping is closed")
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"range {offset:#x}+{size:#x} outside a mapping of {self.size:#x}")
        return self.addr + offset

    def address(self, offset: int, size: int) -> int:
        """Where ``[offset, offset+size)`` is in this process (bounds-checked), to read in place."""
        return self._check(offset, size)

    def read(self, offset: int, size: int) -> bytes:
        return sys.read_at(self._check(offset, size), size)

    def write(self, offset: int, data: bytes | bytearray | memoryview) -> None:
        sys.write_at(self._check(offset, len(data)), data)

    def close(self) -> None:
        addr, self.addr = self.addr, 0
        if addr:
            sys.munmap(addr, self.size)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "addr", 0):
            self.close()


#: KVM_GET_API_VERSION of every KVM since 2.6.22 (api.rst 4.1).
KVM_API_VERSION = 12


class KvmUnusable(OSError):
    """``path`` cannot serve as /dev/kvm; ``str()`` is one sentence saying why."""

    def __str__(self) -> str:
        return str(self.strerror)


def _describe_open_failure(path: str, exc: OSError) -> str:
    why = exc.strerror or str(exc)
    if exc.errno == errno.ENOENT:
        return f"{path} does not exist (KVM module not loaded, or the device is hidden here)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"cannot open {path}: {why} (needs read/write access, e.g. the kvm group)"
    return f"cannot open {path}: {why}"


class Kvm(_Fd):
    """/dev/kvm: the system fd. Capabilities, VM creation.

    Opening checks KVM_GET_API_VERSION, so a path that is not a KVM device (``/dev/null``
    bound over it, a regular file) is refused here with :class:`KvmUnusable`, not later as
    a stray ENOTTY.
    """

    def __init__(self, path: str = DEV_KVM) -> None:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as exc:
            raise KvmUnusable(exc.errno, _describe_open_failure(path, exc)) from exc
        super().__init__(fd)
        self._mmap_size = 0
        try:
            version = self.api_version()
        except OSError as exc:
            self.close()
            raise KvmUnusable(
                exc.errno,
                f"{path} is not a KVM device (KVM_GET_API_VERSION: {os.strerror(exc.errno or 0)})",
            ) from exc
        if version != KVM_API_VERSION:
            self.close()
            raise KvmUnusable(
                errno.EINVAL, f"{path}: KVM API version {version}, expected {KVM_API_VERSION}"
            )

    def api_version(self) -> int:
        return sys.ioctl(self.fd, abi.KVM_GET_API_VERSION)

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on /dev/kvm: 0 when absent, else a capability-specific value."""
        return sys.ioctl(self.fd, abi.KVM_CHECK_EXTENSION, int(cap))

    def vcpu_mmap_size(self) -> int:
        if not self._mmap_size:
            self._mmap_size = sys.ioctl(self.fd, abi.KVM_GET_VCPU_MMAP_SIZE)
        return self._mmap_size

    def supported_cpuid(self) -> ctypes.Array[abi.kvm_cpuid_entry2]:
        """KVM_GET_SUPPORTED_CPUID, growing the buffer while the kernel says E2BIG."""
        nent = 128
        while True:
            buf = _cpuid_buffer(nent)
            try:
                sys.ioctl(self.fd, abi.KVM_GET_SUPPORTED_CPUID, buf)
            except OSError as e:
                if e.errno == 7 and nent < 4096:  # E2BIG
                    nent *= 2
                    continue
                raise
            head = abi.kvm_cpuid2.from_buffer(buf)
            entries: ctypes.Array[abi.kvm_cpuid_entry2]
            entries = (abi.kvm_cpuid_entry2 * head.nent).from_buffer(buf, ctypes.sizeof(head))
            return entries

    def create_vm(self, vm_type: int = 0) -> Vm:
        """KVM_CREATE_VM; ``vm_type`` is a :class:`~.abi.VmType` on x86."""
        return Vm(self, sys.ioctl(self.fd, abi.KVM_CREATE_VM, int(vm_type)), int(vm_type))


def _cpuid_buffer(nent: int) -> ctypes.Array[ctypes.c_char]:
    size = ctypes.sizeof(abi.kvm_cpuid2) + nent * ctypes.sizeof(abi.kvm_cpuid_entry2)
    buf = ctypes.create_string_buffer(size)
    abi.kvm_cpuid2.from_buffer(buf).nent = nent
    return buf


class Vm(_Fd):
    """A VM fd: memory slots, attributes, guest_memfd files, vCPUs."""

    def __init__(self, kvm: Kvm, fd: int, vm_type: int) -> None:
        super().__init__(fd)
        self.kvm = kvm
        self.vm_type = vm_type
        self._vcpus: list[Vcpu] = []

    def check_extension(self, cap: int) -> int:
        """KVM_CHECK_EXTENSION on the VM fd (answers for this VM's type)."""
        return sys.ioctl(self.fd, abi.KVM_CHECK_EXTENSION, int(cap))

    def enable_cap(self, cap: int, *args: int, flags: int = 0) -> None:
        arg = abi.kvm_enable_cap(cap=int(cap), flags=flags)
        for i, value in enumerate(args):
            arg.args[i] = value
        sys.ioctl(self.fd, abi.KVM_ENABLE_CAP, arg)

    def set_tss_addr(self, addr: int) -> None:
        sys.ioctl(self.fd, abi.KVM_SET_TSS_ADDR, addr)

    def create_guest_memfd(self, size: int, flags: int = 0) -> GuestMemfd:
        """KVM_CREATE_GUEST_MEMFD; ``flags`` are GUEST_MEMFD_FLAG_* bits."""
        arg = abi.kvm_create_guest_memfd(size=size, flags=flags)
        return GuestMemfd(sys.ioctl(self.fd, abi.KVM_CREATE_GUEST_MEMFD, arg), size, flags)

    def set_user_memory_region(
        self, slot: int, gpa: int, size: int, userspace_addr: int, flags: int = 0
    ) -> None:
        arg = abi.kvm_userspace_memory_region(
            slot=slot,
            flags=flags,
            guest_phys_addr=gpa,
            memory_size=size,
            userspace_addr=userspace_addr,
        )
        sys.ioctl(self.fd, abi.KVM_SET_USER_MEMORY_REGION, arg)

    def set_user_memory_region2(
        self,
        slot: int,
        gpa: int,
        size: int,
        userspace_addr: int,
        flags: int = 0,
        guest_memfd: int = 0,
        guest_memfd_offset: int = 0,
    ) -> None:
        """KVM_SET_USER_MEMORY_REGION2; size 0 deletes the slot."""
        arg = abi.kvm_userspace_memory_region2(
            slot=slot,
            flags=flags,
            guest_phys_addr=gpa,
            memory_size=size,
            userspace_addr=userspace_addr,
            guest_memfd_offset=guest_memfd_offset,
            guest_memfd=guest_memfd,
        )
        sys.ioctl(self.fd, abi.KVM_SET_USER_MEMORY_REGION2, arg)

    def set_memory_attributes(self, gpa: int, size: int, attributes: int, flags: int = 0) -> None:
        arg = abi.kvm_memory_attributes(address=gpa, size=size, attributes=attributes, flags=flags)
        sys.ioctl(self.fd, abi.KVM_SET_MEMORY_ATTRIBUTES, arg)

    def pre_fault_memory(self, gpa: int, size: int) -> None:
        sys.ioctl(self.fd, abi.KVM_PRE_FAULT_MEMORY, abi.kvm_pre_fault_memory(gpa=gpa, size=size))

    def create_vcpu(self, vcpu_id: int = 0) -> Vcpu:
        fd = sys.ioctl(self.fd, abi.KVM_CREATE_VCPU, vcpu_id)
        try:
            run = Mapping.of_fd(fd, self.kvm.vcpu_mmap_size())
        except BaseException:
            os.close(fd)
            raise
        vcpu = Vcpu(fd, vcpu_id, run)
        self._vcpus.append(vcpu)
        return vcpu

    def close(self) -> None:
        vcpus, self._vcpus = self._vcpus, []
        try:
            for vcpu in vcpus:
                vcpu.close()
        finally:
            super().close()


class Vcpu(_Fd):
    """A vCPU fd and its mmap'd ``struct kvm_run``."""

    def __init__(self, fd: int, vcpu_id: int, run: Mapping) -> None:
        super().__init__(fd)
        self.id = vcpu_id
        self._run_map = run
        self.kvm_run = abi.kvm_run.from_address(run.addr)

    @property
    def run_addr(self) -> int:
        """Address of ``struct kvm_run``; KVM_EXIT_IO data sits at ``run_addr + data_offset``."""
        return self._run_map.addr

    @property
    def run_size(self) -> int:
        """Size of the vCPU mapping (KVM_GET_VCPU_MMAP_SIZE), struct kvm_run and I/O data."""
        return self._run_map.size

    def run(self) -> int:
        """KVM_RUN once; returns ``kvm_run.exit_reason``. A signal gives InterruptedError."""
        sys.ioctl(self.fd, abi.KVM_RUN)
        return int(self.kvm_run.exit_reason)

    def get_regs(self) -> abi.kvm_regs:
        regs = abi.kvm_regs()
        sys.ioctl(self.fd, abi.KVM_GET_REGS, regs)
        return regs

    def set_regs(self, regs: abi.kvm_regs) -> None:
        sys.ioctl(self.fd, abi.KVM_SET_REGS, regs)

    def get_sregs(self) -> abi.kvm_sregs:
        sregs = abi.kvm_sregs()
        sys.ioctl(self.fd, abi.KVM_GET_SREGS, sregs)
        return sregs

    def set_sregs(self, sregs: abi.kvm_sregs) -> None:
        sys.ioctl(self.fd, abi.KVM_SET_SREGS, sregs)

    def set_cpuid(self, entries: ctypes.Array[abi.kvm_cpuid_entry2]) -> None:
        buf = _cpuid_buffer(len(entries))
        ctypes.memmove(
            ctypes.addressof(buf) + ctypes.sizeof(abi.kvm_cpuid2),
            ctypes.addressof(entries),
            ctypes.sizeof(entries),
        )
        sys.ioctl(self.fd, abi.KVM_SET_CPUID2, buf)

    def close(self) -> None:
        try:
            self._run_map.close()
        finally:
            super().close()


class GuestMemfd(_Fd):
    """A guest_memfd file: sized at creation, optionally mmap-able (GUEST_MEMFD_FLAG_MMAP)."""

    def __init__(self, fd: int, size: int, flags: int) -> None:
        super().__init__(fd)
        self.size = size
        self.flags = flags

    @property
    def mmapable(self) -> bool:
        return bool(self.flags & abi.GUEST_MEMFD_FLAG_MMAP)

    def mmap(self, offset: int = 0, length: int | None = None) -> Mapping:
        """A MAP_SHARED read/write mapping of the file (refused by the kernel without MMAP)."""
        return Mapping.of_fd(self.fd, self.size - offset if length is None else length, offset)

    def punch_hole(self, offset: int, length: int) -> None:
        """fallocate(PUNCH_HOLE|KEEP_SIZE): the range's pages are freed and read back as zero."""
        sys.fallocate(self.fd, abi.FALLOC_FL_PUNCH_HOLE | abi.FALLOC_FL_KEEP_SIZE, offset, length)

    def allocate(self, offset: int, length: int) -> None:
        """fallocate(KEEP_SIZE): allocate the range's pages (guest_memfd refuses mode 0)."""
        sys.fallocate(self.fd, abi.FALLOC_FL_KEEP_SIZE, offset, length)


def kvm_unusable_reason(path: str = DEV_KVM) -> str | None:
    """Why ``path`` cannot be used as /dev/kvm here, or None when it can."""
    try:
        Kvm(path).close()
    except KvmUnusable as exc:
        return str(exc)
    return None
