"""What the host's CPU is: bare metal, a virtual CPU of a hypervisor, or an emulated one.

Why a result needs it: a KVM backend on an emulated CPU (kvm_amd inside the lab's L1, whose
SVM is QEMU TCG's emulation) behaves like KVM only as far as the emulation is faithful, so
every report says what the CPU under KVM is, and lab results are never mistaken for
hardware results. The hypervisor is named by CPUID leaf 0x40000000, read by executing
``cpuid`` from a page of machine code (no cpuid module or root needed); the lab also marks its
kernel command line (``qmpgmem.lab=tcg``) because QEMU TCG does not always fill that leaf.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import mmap
from pathlib import Path
from typing import Final

__all__ = ["CpuKind", "cpu_kind", "cpuid", "describe", "hypervisor_signature"]

# void f(u32 leaf, u32 subleaf, u32 out[4]) in the SysV ABI: push rbx; mov r8,rdx;
# mov eax,edi; mov ecx,esi; cpuid; mov [r8],eax; mov [r8+4],ebx; mov [r8+8],ecx;
# mov [r8+12],edx; pop rbx; ret
_CPUID_CODE: Final = bytes.fromhex("534989d089f889f10fa241890041895804418948084189500c5bc3")
_SIGNATURES: Final = {
    "KVMKVMKVM\0\0\0": "KVM",
    "TCGTCGTCGTCG": "QEMU TCG",
    "Microsoft Hv": "Hyper-V",
    "VMwareVMware": "VMware",
    "XenVMMXenVMM": "Xen",
    "VBoxVBoxVBox": "VirtualBox",
    " lrpepyh  vr": "Parallels",
    "ACRNACRNACRN": "ACRN",
}
#: Set on the L1 kernel command line by qmpgmem's lab (lab/machine.py).
LAB_MARK: Final = "qmpgmem.lab=tcg"


class CpuKind(str):
    """A short human description, e.g. "bare metal", "virtual (KVM)", "emulated (QEMU TCG)"."""

    @property
    def emulated(self) -> bool:
        return self.startswith("emulated")


@functools.cache
def _cpuid_function() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError):
        return None  # W^X hardening: no executable anonymous pages here
    page.write(_CPUID_CODE)
    address = ctypes.addressof(ctypes.c_char.from_buffer(page))
    proto = ctypes.CFUNCTYPE(
        None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)
    )
    function = proto(address)
    function._page = page  # type: ignore[attr-defined]  # keep the mapping alive
    return function


def cpuid(leaf: int, subleaf: int = 0) -> tuple[int, int, int, int] | None:
    """EAX, EBX, ECX, EDX of CPUID ``leaf``, or None where code cannot be executed."""
    function = _cpuid_function()
    if function is None:
        return None
    out = (ctypes.c_uint32 * 4)()
    function(leaf, subleaf, out)
    return out[0], out[1], out[2], out[3]


def hypervisor_signature() -> str | None:
    """The 12-byte vendor signature of leaf 0x40000000 when the hypervisor bit is set."""
    leaf1 = cpuid(1)
    if leaf1 is None or not leaf1[2] & (1 << 31):
        return None
    regs = cpuid(0x40000000)
    assert regs is not None
    return b"".join(r.to_bytes(4, "little") for r in regs[1:]).decode("latin-1")


def _cmdline(path: Path = Path("/proc/cmdline")) -> str:
    with contextlib.suppress(OSError):
        return path.read_text()
    return ""


@functools.cache
def cpu_kind() -> CpuKind:
    """How the CPU that KVM runs on is provided (see the module docstring)."""
    return describe(_cmdline(), cpuid(1) is not None, hypervisor_signature())


def describe(cmdline: str, cpuid_works: bool, signature: str | None) -> CpuKind:
    """The description from what was read (pure, for tests)."""
    if LAB_MARK in cmdline.split():
        return CpuKind("emulated (QEMU TCG, qmpgmem lab)")
    if not cpuid_works:
        return CpuKind("unknown (cpuid not executable here)")
    if signature is None:
        return CpuKind("bare metal")
    name = _SIGNATURES.get(signature, f"signature {signature!r}")
    if name == "QEMU TCG":
        return CpuKind("emulated (QEMU TCG)")
    return CpuKind(f"virtual ({name})")
