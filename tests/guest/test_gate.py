"""The CPL0 gate and CONVERT (KVM_HC_MAP_GPA_RANGE).

Under kvm_pvm a vmcall/vmmcall never returns, so here the hypercall path is checked by
reading the code and the live IDT; a real CONVERT runs only on kvm_intel/kvm_amd.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from qmpgmem.guest import protocol as p
from qmpgmem.guest.image import guest_image

from .conftest import kvm_backend, kvm_usable
from .vm import REGION_GPA, Boot, running_guest

IDT = 0x17000
GATE_VECTORS = (3, 0x80)


def disassembly(elf: Path) -> dict[str, str]:
    """Function name -> its objdump disassembly."""
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("needs objdump (binutils)")
    text = subprocess.run(
        [objdump, "-d", "--no-show-raw-insn", str(elf)], capture_output=True, text=True, check=True
    ).stdout
    funcs: dict[str, str] = {}
    for block in re.split(r"\n(?=[0-9a-f]{16} <)", text):
        m = re.match(r"([0-9a-f]{16}) <([^>]+)>:", block)
        if m:
            funcs[m.group(2)] = block
    return funcs


def symbol(elf: Path, name: str) -> int:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("needs nm (binutils)")
    out = subprocess.run([nm, str(elf)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        addr, _, sym = line.split()
        if sym == name:
            return int(addr, 16)
    raise AssertionError(f"{name} not in {elf}")


@pytest.fixture
def elf(built_images: None) -> Path:
    return guest_image("pvh")


def test_gate_code(elf: Path) -> None:
    funcs = disassembly(elf)
    gate = funcs["mg_gate"]
    for insn in ("vmcall", "vmmcall", "mov    %rsi,%cr3", "iretq"):
        assert insn in gate, insn
    assert re.search(r"\bhlt\b", funcs["mg_idle_begin"])  # the idle function, then iretq
    assert re.search(r"\bint3\b", funcs["cpu_hypercall"])
    # the CONVERT handler calls it with nr = KVM_HC_MAP_GPA_RANGE (12) as the first argument
    callers = [
        body.splitlines()[max(0, i - 16) : i + 1]
        for body in funcs.values()
        for i, line in enumerate(body.splitlines())
        if re.search(r"call\s+\w+ <cpu_hypercall>", line)
    ]
    assert callers, "nothing calls cpu_hypercall"
    assert any(re.search(r"mov\s+\$0xc,%(e|r)di", line) for c in callers for line in c)


async def test_live_idt_has_the_gate(qemu: str, tmp_path: Path, elf: Path) -> None:
    """Vectors 3 and 0x80: present 64-bit interrupt gates, DPL 3, to mg_gate in CS 0x18."""
    if not kvm_usable():
        pytest.skip("needs /dev/kvm")
    target = symbol(elf, "mg_gate")
    async with running_guest(qemu, tmp_path, Boot("rom", "kvm")) as vm:
        dump = tmp_path / "idt.bin"
        await vm.execute("pmemsave", {"val": IDT, "size": 256 * 16, "filename": str(dump)})
        idt = dump.read_bytes()
    for vec in GATE_VECTORS:
        lo, sel, ist, attr, mid, hi = struct.unpack_from("<HHBBHI", idt, vec * 16)
        assert (sel, ist, attr) == (0x18, 0, 0xEE), hex(vec)
        assert lo | mid << 16 | hi << 32 == target
    for vec in (6, 13, 14):  # exceptions: DPL 0 gates to the fault reporter
        assert struct.unpack_from("<HHBB", idt, vec * 16)[1:] == (0x18, 0, 0x8E)


async def test_convert_on_hardware_kvm(qemu: str, tmp_path: Path) -> None:
    backend = kvm_backend()
    if backend == "kvm_pvm":
        pytest.skip("kvm_pvm: a guest vmcall/vmmcall never returns (see docs/guest-protocol.md)")
    if backend is None or not kvm_usable():
        pytest.skip("needs hardware KVM (kvm_intel or kvm_amd)")
    async with running_guest(qemu, tmp_path, Boot("rom", "kvm")) as vm:
        # QEMU enables the KVM_HC_MAP_GPA_RANGE exit only for confidential VMs, so KVM
        # itself answers -KVM_ENOSYS (-1000) here
        for private in (True, False):
            reply = await vm.request(p.request_convert(REGION_GPA, 0x2000, private))
            assert reply == "OK RET -1000", reply
        # back at CPL3 with port I/O still allowed, and the channel in step
        assert await vm.request("PING") == "OK PONG"
