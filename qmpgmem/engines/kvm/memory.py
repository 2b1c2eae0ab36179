"""Guest-physical memory of a direct KVM VM: the sys area, the scenario regions, the ROM.

Layout (docs/guest-protocol.md): the micro guest owns GPA ``[0, SYS_SIZE)``; the scenario's
regions follow from ``SYS_SIZE`` in the order the scenario lists them, back to back; the
64 KiB ROM sits just below 4 GiB, where the reset vector expects it, and, as QEMU's
"isa-bios" alias of a 64 KiB image, also at ``0xF0000`` over the sys area, so real-mode code
may run from segment 0xF000.

The ROM is mapped as RAM (a private copy of the image), not as a KVM_MEM_READONLY slot: QEMU's
microvm maps its ``-bios`` the same way (``x86_bios_rom_init(..., isapc_ram_fw=true)``), and on
kvm_pvm a read-only slot hangs the vCPU as soon as loading a segment has to set the accessed
bit of a descriptor in a GDT inside the ROM (kernel-contract check
``memslot.readonly_descriptor``).

Each region becomes one memslot. A ``guest_memfd`` region gets its own guest_memfd file:

* with ``mmap`` the file's own MAP_SHARED mapping is the slot's ``userspace_addr`` — upstream
  serves such a slot from the guest_memfd alone, and kvm_pvm serves it from ``userspace_addr``
  (docs/kernel-contract.md), so only the file's own mapping gives the same memory on both;
* without ``mmap`` the slot pairs the file (private memory) with an anonymous mapping
  (shared memory), as QEMU does for confidential guests; the host sees the shared side. The
  region's ``share`` picks its kind, as the conversion selftest's ``-s`` does: shared
  anonymous memory (shmem; the default, and ``share: true``) or private anonymous memory
  (``share: false``, the selftest's default ``-s anonymous`` and QEMU's memory-backend-ram).

Why a module apart from the engine: it owns every mapping and fd of the VM's memory and gives
them back in ``close()``, and it is what both the engine and the kernel-contract checks use to
turn a scenario region into a memslot.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from qmpgmem.engines.kvm import abi
from qmpgmem.engines.kvm.objects import GuestMemfd, Mapping, Vm
from qmpgmem.errors import UnsupportedStep
from qmpgmem.guest.protocol import SYS_SIZE
from qmpgmem.rundir import open_backing_file
from qmpgmem.scenario.model import Region

ROM_SIZE: Final = 64 << 10
ROM_GPA: Final = (4 << 30) - ROM_SIZE
ISA_BIOS_GPA: Final = 0x100000 - ROM_SIZE  # QEMU's isa-bios alias of a 64 KiB ROM
GMEM_FLAG_BITS: Final = {
    "mmap": abi.GUEST_MEMFD_FLAG_MMAP,
    "init_shared": abi.GUEST_MEMFD_FLAG_INIT_SHARED,
}


@dataclass
class Placed:
    """One region in guest-physical memory and what backs it on the host."""

    region: Region
    gpa: int
    slot: int
    mapping: Mapping  # what the host reads and writes (the guest_memfd's own, or shared side)
    gmem: GuestMemfd | None = None
    #: False when touching ``mapping`` would SIGBUS (guest_memfd with mmap, not init_shared).
    host_access: bool = True
    #: True when ``mapping`` is the guest_memfd itself (in place), False for a shared side.
    in_place: bool = False
    #: The shared side is MAP_PRIVATE anonymous memory (freed with MADV_DONTNEED, not
    #: MADV_REMOVE, which only shmem and files take).
    private_anonymous: bool = False

    @property
    def size(self) -> int:
        return self.region.size

    @property
    def host_view(self) -> str:
        """What the host reads, as a host.read's ``via`` says it."""
        if self.in_place:
            return "guest_memfd mmap"
        if self.gmem is not None:
            return "guest_memfd's shared mapping"
        return f"{self.region.backend} mapping"

    def contains(self, gpa: int, size: int) -> bool:
        return self.gpa <= gpa and gpa + size <= self.gpa + self.size


class GuestMemory:
    """Builds the memslots of one VM; ``close()`` unmaps and closes everything it made."""

    def __init__(self, vm: Vm, file_dir: Path | None = None) -> None:
        """``file_dir`` (the run directory) holds the backing files of ``file`` regions
        whose ``path`` is a file name or absent (``rundir.open_backing_file``)."""
        self._vm = vm
        self._file_dir = file_dir
        self._stack = contextlib.ExitStack()
        self.sys: Mapping | None = None
        self.rom: Mapping | None = None
        self.regions: list[Placed] = []
        self._next_slot = 0
        self._use_region2 = vm.kvm.check_extension(abi.Cap.USER_MEMORY2) > 0

    @property
    def slots(self) -> int:
        """Memslots added so far (each KVM_SET_USER_MEMORY_REGION waits for a grace period)."""
        return self._next_slot

    def _slot(self) -> int:
        slot = self._next_slot
        self._next_slot += 1
        return slot

    def _set_slot(
        self,
        slot: int,
        gpa: int,
        size: int,
        addr: int,
        flags: int = 0,
        gmem: GuestMemfd | None = None,
    ) -> None:
        if self._use_region2:
            self._vm.set_user_memory_region2(
                slot, gpa, size, addr, flags, gmem.fd if gmem else 0, 0
            )
        elif gmem is not None:
            raise UnsupportedStep("KVM lacks KVM_CAP_USER_MEMORY2: no guest_memfd memslots")
        else:
            self._vm.set_user_memory_region(slot, gpa, size, addr, flags)

    def add_sys(self, size: int = SYS_SIZE, rom_alias: bool = False) -> Mapping:
        """Anonymous RAM for the guest's own use at GPA 0 (with a hole for the ROM alias)."""
        self.sys = self._stack.enter_context(Mapping.anonymous(size))
        if rom_alias and size > ISA_BIOS_GPA + ROM_SIZE:
            self._set_slot(self._slot(), 0, ISA_BIOS_GPA, self.sys.addr)
            top = ISA_BIOS_GPA + ROM_SIZE
            self._set_slot(self._slot(), top, size - top, self.sys.addr + top)
        else:
            self._set_slot(self._slot(), 0, size, self.sys.addr)
        return self.sys

    def add_rom(self, image: bytes, alias: bool = False, readonly: bool = False) -> Mapping:
        """The ROM image ending at 4 GiB (the reset vector is its last 16 bytes); with
        ``alias`` also at 0xF0000 (``add_sys(rom_alias=True)`` leaves the hole for it).

        RAM like microvm's ``-bios`` unless ``readonly`` (see the module docstring)."""
        if len(image) != ROM_SIZE:
            raise ValueError(f"the ROM must be {ROM_SIZE} bytes, got {len(image)}")
        self.rom = self._stack.enter_context(Mapping.anonymous(ROM_SIZE, shared=False))
        self.rom.write(0, image)
        flags = abi.KVM_MEM_READONLY if readonly else 0
        self._set_slot(self._slot(), ROM_GPA, ROM_SIZE, self.rom.addr, flags)
        if alias:
            self._set_slot(self._slot(), ISA_BIOS_GPA, ROM_SIZE, self.rom.addr, flags)
        return self.rom

    def add_regions(self, regions: list[Region], base: int = SYS_SIZE) -> None:
        """Regions back to back from ``base`` (engines/layout.py places them the same way)."""
        gpa = base
        for region in regions:
            self.add_region(region, gpa)
            gpa += region.size

    def add_region(self, region: Region, gpa: int) -> Placed:
        slot = self._slot()
        if region.backend == "guest_memfd":
            placed = self._add_gmem(region, gpa, slot)
        else:
            mapping = self._stack.enter_context(self._host_mapping(region))
            self._set_slot(slot, gpa, region.size, mapping.addr)
            placed = Placed(region, gpa, slot, mapping)
        self.regions.append(placed)
        return placed

    def _host_mapping(self, region: Region) -> Mapping:
        if region.backend == "memfd":
            fd = os.memfd_create(f"qmpgmem-{region.id}", os.MFD_CLOEXEC)
            try:
                os.ftruncate(fd, region.size)
                mapping = Mapping.of_fd(fd, region.size)
                mapping.advise_huge()
                return mapping
            finally:
                os.close(fd)  # the mapping keeps the memfd alive
        if region.backend == "file":
            if self._file_dir is None and not region.outside_run_dir:
                raise ValueError(f"region {region.id}: backend file needs a run directory")
            # O_NOFOLLOW, exclusive 0600 creation, an existing file only with existing: use
            # (and never resized); removed in close() when made outside the run directory.
            backing = open_backing_file(
                self._file_dir or Path("/"),
                region.id,
                region.size,
                path=region.path,
                existing=region.existing,
                keep=region.keep,
            )
            self._stack.callback(backing.close)  # after the mapping's own unmap (LIFO)
            return Mapping.of_fd(backing.fd, region.size)
        # "ram": anonymous memory, shared only when the scenario says share
        return Mapping.anonymous(region.size, shared=bool(region.share), huge=True)

    def _add_gmem(self, region: Region, gpa: int, slot: int) -> Placed:
        vm = self._vm
        if vm.check_extension(abi.Cap.GUEST_MEMFD) <= 0:
            raise UnsupportedStep(f"KVM offers no guest_memfd for VM type {vm.vm_type}")
        flags = 0
        for name in region.gmem_flags:
            flags |= GMEM_FLAG_BITS[name]
        offered = vm.check_extension(abi.Cap.GUEST_MEMFD_FLAGS)
        if flags & ~offered:
            raise UnsupportedStep(
                f"region {region.id}: guest_memfd flags {region.gmem_flags} need bits "
                f"{flags:#x}, KVM_CAP_GUEST_MEMFD_FLAGS offers {offered:#x}"
            )
        gmem = self._stack.enter_context(vm.create_guest_memfd(region.size, flags))
        if flags & abi.GUEST_MEMFD_FLAG_MMAP:
            mapping = self._stack.enter_context(gmem.mmap())
            in_place = True
            host_access = bool(flags & abi.GUEST_MEMFD_FLAG_INIT_SHARED)
        else:
            shared = region.share is not False
            mapping = self._stack.enter_context(Mapping.anonymous(region.size, shared=shared))
            in_place, host_access = False, True
        self._set_slot(slot, gpa, region.size, mapping.addr, abi.KVM_MEM_GUEST_MEMFD, gmem)
        return Placed(
            region, gpa, slot, mapping, gmem, host_access, in_place, region.share is False
        )

    def region(self, region_id: str) -> Placed:
        for placed in self.regions:
            if placed.region.id == region_id:
                return placed
        raise KeyError(region_id)

    def find(self, gpa: int, size: int) -> Placed | None:
        """The region that holds all of ``[gpa, gpa+size)``, if one does."""
        for placed in self.regions:
            if placed.contains(gpa, size):
                return placed
        return None

    def close(self) -> None:
        """Unmap and close everything (after the VM's memslots stopped mattering)."""
        self._stack.close()
        self.regions.clear()
        self.sys = self.rom = None
