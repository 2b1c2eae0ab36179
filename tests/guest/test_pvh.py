"""The PVH ELF through `-kernel`: qboot on microvm (what the QEMU engine picks there), microvm's
default firmware (on Debian a SeaBIOS build: ~2.8 s a boot on kvm_pvm) and SeaBIOS on q35.

The firmware runs first and keeps its tables at the top of RAM, which is the end of the
scenario region in this layout; the guest itself writes nothing there, so ZERO is checked
on the region's first half only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpgmem.guest import protocol as p
from qmpgmem.host.firmware import find_firmware

from .conftest import require
from .vm import REGION_GPA, Boot, MiB, running_guest

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


@pytest.mark.parametrize(
    ("machine", "firmware"), [("microvm", "qboot"), ("microvm", None), ("q35", None)]
)
async def test_pvh_boot_and_requests(
    qemu: str, tmp_path: Path, machine: str, firmware: str | None
) -> None:
    path = find_firmware(qemu).get(firmware) if firmware else None
    if firmware and path is None:
        pytest.skip(f"no {firmware} image beside {qemu} or under /usr/share/qemu")
    boot = Boot("pvh", "kvm", machine, firmware=path)
    require(boot)
    async with running_guest(qemu, tmp_path, boot, hello_timeout=30.0) as vm:
        assert vm.hello is not None
        assert (vm.hello.cpl, vm.hello.sys_end) == (3, p.SYS_SIZE)
        assert await vm.request("PING") == "OK PONG"
        assert await vm.request(p.request_zero(REGION_GPA, 8 * MiB)) == "OK ZERO"
        for gpa, seed, offset, size in [
            (REGION_GPA, 3, 0, 0x10008),
            (REGION_GPA + 0x800, 4, 8, 24),
        ]:
            assert await vm.request(p.request_write(gpa, size, seed, offset)) == "OK"
            expected = p.pattern_hash(seed, offset, size)
            assert await vm.request(p.request_hash(gpa, size)) == f"OK {expected:016x}"
        assert await vm.request("HASH 200000 8") == "ERR out of range"  # the image itself
        vm.serial.send(p.request_exit(3))
        assert await vm.wait() == 7
