"""The lab kernel's configuration: x86_64_defconfig + kvm_guest.config + this fragment.

Why a fragment checked after ``olddefconfig``: Kconfig silently drops an option whose
dependencies are unmet (``KVM_SW_PROTECTED_VM`` needs ``EXPERT``), so every option the lab
relies on is verified in the final ``.config`` and a missing one is a build error, not a lab
that boots without sw-protected VMs. What is switched off only saves build time (graphics,
sound, wireless, USB, netfilter, debug info): 15 min on 2 cores for 7.2 instead of hours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Final

__all__ = [
    "BASE_TARGETS",
    "DISABLED",
    "LOCALVERSION",
    "REQUIRED",
    "config_digest",
    "fragment_text",
    "missing_required",
    "parse_config",
]

#: make targets that produce the base configuration, in order.
BASE_TARGETS: Final = ("x86_64_defconfig", "kvm_guest.config")
LOCALVERSION: Final = "-qmpgmem-lab"

#: Built in, and checked after olddefconfig: without any of these the lab cannot work.
REQUIRED: Final = (
    "EXPERT",  # KVM_SW_PROTECTED_VM depends on it
    "VIRTUALIZATION",
    "KVM",
    "KVM_AMD",  # QEMU TCG's -cpu max is an AMD CPU with SVM + NPT
    "KVM_SW_PROTECTED_VM",  # VM type 1: private memory attributes without SEV/TDX
    "NET_9P",
    "NET_9P_VIRTIO",
    "9P_FS",  # the host root and the results share
    "VIRTIO_PCI",
    "VIRTIO_CONSOLE",
    "BLK_DEV_INITRD",
    "DEVTMPFS",
    "TMPFS",
    "SHMEM",
    "MEMFD_CREATE",
    "SERIAL_8250_CONSOLE",
    "NUMA",  # guest_memfd mempolicy checks, L1 can be given two nodes
    "TRANSPARENT_HUGEPAGE",
    "IKCONFIG",
    "IKCONFIG_PROC",  # /proc/config.gz tells a job what it runs on
)

#: Switched off to keep the build short; dropped silently if Kconfig insists.
DISABLED: Final = (
    "KVM_INTEL", "DRM", "FB", "SOUND", "SND", "WLAN", "WIRELESS", "CFG80211", "MAC80211",
    "RFKILL", "USB_SUPPORT", "NETFILTER", "AGP", "HID", "INPUT_JOYSTICK", "INPUT_TABLET",
    "INPUT_TOUCHSCREEN", "ETHERNET", "NFS_FS", "AUTOFS_FS", "QUOTA", "EFI", "HIBERNATION",
    "SUSPEND", "DEBUG_INFO", "DEBUG_INFO_DWARF_TOOLCHAIN_DEFAULT", "DEBUG_INFO_DWARF4",
    "DEBUG_INFO_DWARF5", "DEBUG_INFO_BTF", "SECURITY_SELINUX", "AUDIT", "PROFILING", "KPROBES",
    "FTRACE", "WERROR", "LOCALVERSION_AUTO", "MODULE_SIG",
)  # fmt: skip

#: Bump when the way the kernel is built changes, so older cache entries are not reused.
BUILD_RECIPE: Final = "1"


def fragment_text() -> str:
    """The fragment as .config lines, appended to the base config before olddefconfig."""
    lines = [f"CONFIG_{name}=y" for name in REQUIRED]
    lines += [f"# CONFIG_{name} is not set" for name in DISABLED]
    lines += ["CONFIG_DEBUG_INFO_NONE=y", f'CONFIG_LOCALVERSION="{LOCALVERSION}"']
    return "\n".join(lines) + "\n"


def config_digest() -> str:
    """What the configuration is made of, as a digest for the cache key."""
    recipe = "\n".join([BUILD_RECIPE, *BASE_TARGETS, fragment_text()])
    return hashlib.sha256(recipe.encode()).hexdigest()


def parse_config(text: str) -> dict[str, str]:
    """A .config as {option: value}; 'is not set' lines become 'n'."""
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            values[line[len("# CONFIG_") : -len(" is not set")]] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            name, _, value = line[len("CONFIG_") :].partition("=")
            values[name] = value
    return values


def missing_required(config_text: str, required: Iterable[str] = REQUIRED) -> list[str]:
    """The required options that are not ``=y`` in a final .config (empty: all hold)."""
    values = parse_config(config_text)
    return [name for name in required if values.get(name) != "y"]
