"""The vCPU thread on its own: a guest that never exits is still stopped (the kick signal)."""

from __future__ import annotations

import time

from qmpgmem.engines.kvm import longmode
from qmpgmem.engines.kvm.objects import Kvm, Mapping
from qmpgmem.engines.kvm.serial import Uart16550
from qmpgmem.engines.kvm.vcpu_thread import EndReason, VcpuEnd, VcpuRunner, install_kick_signal

from .helpers import needs_kvm

pytestmark = needs_kvm


def _spinning_runner(kvm: Kvm, ram: Mapping, code: bytes) -> tuple[VcpuRunner, list[VcpuEnd]]:
    vm = kvm.create_vm()
    longmode.write_tables(ram)
    ram.write(longmode.FREE_GPA, code)
    vm.set_user_memory_region(0, 0, ram.size, ram.addr)
    vcpu = vm.create_vcpu(0)
    longmode.enter_user_long_mode(vcpu, longmode.FREE_GPA, 0x80000)
    ends: list[VcpuEnd] = []
    runner = VcpuRunner(vcpu, Uart16550(lambda b: None), lambda hc: None, ends.append)
    runner._vm = vm  # type: ignore[attr-defined]  # keep the VM for the test's cleanup
    return runner, ends


def test_native_spin_is_interrupted(kvm: Kvm) -> None:
    assert install_kick_signal()
    with Mapping.anonymous(1 << 20) as ram:
        runner, ends = _spinning_runner(kvm, ram, bytes.fromhex("ebfe"))  # jmp . at CPL3
        runner.start()
        time.sleep(0.05)
        assert runner.running
        t0 = time.monotonic()
        assert runner.stop(timeout=5)
        assert time.monotonic() - t0 < 1.0
        assert ends == [VcpuEnd(EndReason.STOPPED)]
        runner._vm.close()  # type: ignore[attr-defined]


def test_out_to_debug_exit_and_unknown_ports(kvm: Kvm) -> None:
    # in al,0x70 (no device: reads 0xff); out 0x70,al... then al -> isa-debug-exit (0xf4)
    code = bytes.fromhex("e470 e6f4")
    with Mapping.anonymous(1 << 20) as ram:
        runner, ends = _spinning_runner(kvm, ram, code)
        runner.start()
        deadline = time.monotonic() + 5
        while runner.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ends and ends[0].reason is EndReason.DEBUG_EXIT
        assert ends[0].exit_value == 0xFF
        assert ends[0].exit_status == (0xFF << 1) | 1
        runner._vm.close()  # type: ignore[attr-defined]
