#!/bin/busybox sh
# /init of the lab's initramfs (busybox-static), run by the L1 kernel as PID 1.
# 1. proc, sys, devtmpfs; 2. the host's root read-only over virtio-9p (tag hostroot) at /host,
# with fresh proc/sys/dev and a tmpfs on /run and /dev/shm inside it (the host's /tmp stays
# visible: a checkout there must be reachable; scratch is TMPDIR=/run/tmp); 3. the run's
# writable share (tag lab) at /run/qmpgmem-lab; 4. the job: job.sh of that share, run in a
# chroot of the host root with a clean environment; its exit status goes to rc in the share;
# 5. power off. Markers (QMPGMEM-LAB-...) tell the host how far L1 got.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
up() { cut -d' ' -f1 /proc/uptime; }
fail() { echo "QMPGMEM-LAB-FAILED $*"; poweroff -f; }
echo "QMPGMEM-LAB-INIT uptime=$(up) kernel=$(uname -r)"
[ -e /dev/kvm ] || echo "QMPGMEM-LAB-WARNING no /dev/kvm in L1 (no SVM in the emulated CPU?)"
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o $opts,cache=loose,ro hostroot /host || fail "mount of the host root (9p hostroot)"
[ -x /host/bin/sh ] || fail "the host root has no /bin/sh"
mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs -o size=75%,mode=755 run /host/run
mkdir -p /host/dev/shm && mount -t tmpfs shm /host/dev/shm
mkdir -p /host/run/qmpgmem-lab /host/run/tmp && chmod 1777 /host/run/tmp
mount -t 9p -o $opts lab /host/run/qmpgmem-lab || fail "mount of the run share (9p lab)"
echo "QMPGMEM-LAB-READY uptime=$(up)"
chroot /host /usr/bin/env -i \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root TMPDIR=/run/tmp LANG=C.UTF-8 TERM=dumb COLUMNS=160 QMPGMEM_LAB=1 \
    /bin/sh /run/qmpgmem-lab/job.sh < /dev/null
rc=$?
echo "$rc" > /host/run/qmpgmem-lab/rc
sync
echo "QMPGMEM-LAB-JOB-END rc=$rc uptime=$(up)"
umount /host/run/qmpgmem-lab 2>/dev/null
poweroff -f
