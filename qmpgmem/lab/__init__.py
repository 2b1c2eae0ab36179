"""The lab: a Linux L1 under QEMU TCG whose emulated AMD CPU has SVM and nested paging.

Why it exists: a host whose KVM cannot convert memory (kvm_pvm, or no KVM at all) can still
run a kernel built with ``CONFIG_KVM_SW_PROTECTED_VM=y`` as a guest; inside it kvm_amd offers
sw-protected VMs with private memory attributes, so qmpgmem's conversion scenarios and the
kernel's own selftests run for real. Modules, one concept each:

- ``debian``      packages from Debian through a private apt state (never the system's)
- ``paths``       the cache layout under the user cache dir
- ``kconfig``     the kernel configuration fragment and its verification
- ``build``       fetch, configure and build the kernel and its KVM selftests, cached
- ``initramfs``   the busybox initramfs whose /init runs one job in a chroot of the host root
- ``machine``     boot L1, stream its console, tear it down on every path
- ``tap``         the selftests' TAP output as results
"""
