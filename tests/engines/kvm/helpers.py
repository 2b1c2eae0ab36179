"""Helpers for the KVM engine tests: the ``needs_kvm`` and ``needs_host`` marks and a
throw-away test ROM.

The ROM is a 64 KiB image for engine tests that do not need the real micro guest.

It stays in real mode (tiny, so its slowness under emulation does not matter), says a HELLO
line in the guest protocol's form, then answers ``PING`` with ``OK PONG``, exits through
isa-debug-exit on ``EXIT`` (value 5), executes HLT on ``HALT``, spins without any exit on
``SPIN`` (to test stopping a vCPU that never leaves KVM_RUN) and answers ``ERR`` otherwise.
Its reset vector far-jumps to segment 0xF000, so it runs from the ROM's alias below 1 MiB.
Built with the system assembler into a temporary directory; never shipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest

from qmpgmem.engines.kvm.objects import DEV_KVM
from qmpgmem.host.facts import HostFacts
from qmpgmem.host.kernel import probe_kvm
from qmpgmem.host.requirements import evaluate_requirements


def _kvm_unusable() -> str | None:
    if not Path(DEV_KVM).exists():
        return f"{DEV_KVM} is missing"
    if not os.access(DEV_KVM, os.R_OK | os.W_OK):
        return f"{DEV_KVM} is not readable and writable for this user"
    return None


#: Skip a test (with the reason) where /dev/kvm cannot be used.
needs_kvm = pytest.mark.skipif(_kvm_unusable() is not None, reason=str(_kvm_unusable()))


def host_lacks(*requirements: str) -> str | None:
    """Why this host's KVM cannot meet scenario ``requirements`` (the runner's own words for
    the skip, e.g. "needs guest_memfd; KVM_CAP_GUEST_MEMFD=0 on /dev/kvm"), or None."""
    if (why := _kvm_unusable()) is not None:
        return why
    return evaluate_requirements(list(requirements), HostFacts(kvm=probe_kvm()))


def needs_host(*requirements: str) -> pytest.MarkDecorator:
    """Skip a test, with the reason, where this host's KVM lacks ``requirements``: not every
    kvm_pvm kernel offers guest_memfd (6.18.44-fc has KVM_CAP_GUEST_MEMFD=0)."""
    why = host_lacks(*requirements)
    return pytest.mark.skipif(why is not None, reason=f"this host: {why}")


#: What the tests' guest_memfd regions need (in place: MMAP and INIT_SHARED).
GMEM_REQUIREMENTS: Final = ("guest_memfd", "guest_memfd_mmap", "guest_memfd_init_shared")
#: Why this host cannot build them (None: it can). The lifecycle tests then use memfd
#: regions of the same names; the tests of guest_memfd itself carry ``needs_gmem``.
NO_GMEM: Final = host_lacks(*GMEM_REQUIREMENTS)
needs_gmem: Final = needs_host(*GMEM_REQUIREMENTS)


def memory_without_gmem(memory: list[dict[str, object]]) -> list[dict[str, object]]:
    """``memory`` as it stands where the host has guest_memfd, else with each guest_memfd
    region made a memfd region of the same id and size."""
    if NO_GMEM is None:
        return memory
    return [
        {"id": r["id"], "size": r["size"], "backend": "memfd"}
        if r.get("backend") == "guest_memfd"
        else r
        for r in memory
    ]


SOURCE = r"""
    .code16
    .text
    .globl _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7000, %sp
    mov $hello, %si
    call puts
main_loop:
    mov $0x1000, %di
1:  call getc
    cmp $0x0a, %al
    je 2f
    stosb
    jmp 1b
2:  movb $0, %es:(%di)
    movl 0x1000, %eax
    cmpl $0x474e4950, %eax
    je ping
    cmpl $0x54495845, %eax
    je do_exit
    cmpl $0x544c4148, %eax
    je do_halt
    cmpl $0x4e495053, %eax
    je do_spin
    mov $err, %si
    call puts
    jmp main_loop
ping:
    mov $pong, %si
    call puts
    jmp main_loop
do_exit:
    mov $0x05, %al
    out %al, $0xf4
    hlt
do_halt:
    hlt
do_spin:
    jmp do_spin

puts:
    movb %cs:(%si), %al
    inc %si
    test %al, %al
    jz 9f
    mov %al, %ah
    mov $0x3fd, %dx
3:  in %dx, %al
    test $0x20, %al
    jz 3b
    mov %ah, %al
    mov $0x3f8, %dx
    out %al, %dx
    jmp puts
9:  ret

getc:
    mov $0x3fd, %dx
4:  in %dx, %al
    test $1, %al
    jz 4b
    mov $0x3f8, %dx
    in %dx, %al
    ret

hello: .asciz "HELLO microguest 1 sys=0-400000 cpl=0 vendor=other\n"
pong:  .asciz "OK PONG\n"
err:   .asciz "ERR unknown request\n"

    .org 0xfff0
    ljmp $0xf000, $_start   # run from the isa-bios alias at 0xF0000, as firmware does
    .org 0x10000
"""


def build_minirom(workdir: Path) -> bytes:
    """Assemble the ROM in ``workdir``; skips the test when no assembler is installed."""
    if shutil.which("as") is None or shutil.which("objcopy") is None:
        pytest.skip("binutils (as, objcopy) are needed to build the test ROM")
    src, obj, rom = workdir / "minirom.S", workdir / "minirom.o", workdir / "minirom.bin"
    src.write_text(SOURCE)
    subprocess.run(["as", "--32", "-o", str(obj), str(src)], check=True, capture_output=True)
    subprocess.run(
        ["objcopy", "-O", "binary", "-j", ".text", str(obj), str(rom)],
        check=True,
        capture_output=True,
    )
    data = rom.read_bytes()
    assert len(data) == 64 << 10, len(data)
    return data
