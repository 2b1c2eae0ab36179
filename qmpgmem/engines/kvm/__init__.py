"""The direct KVM engine: a small VMM over the KVM ioctls (ctypes, no compiled extension).

Modules, from the kernel up: :mod:`.abi` (structures, ioctl numbers: data only), :mod:`.sys`
(errno-checked system calls), :mod:`.objects` (``Kvm`` → ``Vm`` → ``Vcpu``, ``GuestMemfd``),
:mod:`.memory` (memslots of a scenario VM), :mod:`.serial` and :mod:`.vcpu_thread` (the
devices and the KVM_RUN loop), :mod:`.engine` (``KvmEngine``), :mod:`.contract` (the
guest_memfd kernel contract as named checks). Import the engine from :mod:`.engine`; this
package imports nothing, so the host probe can use :mod:`.objects` alone.
"""
