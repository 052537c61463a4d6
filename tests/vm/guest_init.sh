#!/bin/busybox sh
# PID 1 of the VM proof's initramfs (tests/vm). One image serves both kernels.
# Like a real capture boot, which mounts the machine's root file system, it mounts the guest's
# root (the disk labelled kdumpsys: Python, kdumpd, ssh, mount.nfs) on /sysroot and runs kdumpd
# there with chroot; only busybox and kernel modules live in the initramfs.
#  First kernel: arms the capture kernel with kdumpd's own `kdump-config load`, then crashes with
#  sysrq-c.  Capture kernel (/proc/vmcore exists): mounts the target disk on /var/crash (as
#  local-fs.target would), brings up the network when the case asks for it, and runs
#  `kdumpd-capture savecore`, which saves the dump and reboots itself (qemu -no-reboot exits).
# The case's files come from qemu's fw_cfg (opt/kdumpd/<name>), so one cached image serves every case.
# Lines starting with KDUMPD-VM are read by the host harness.
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin PYTHONPATH=/opt/kdumpd/site PYTHONDONTWRITEBYTECODE=1
export HOME=/root
mkdir -p /proc /sys /dev /sysroot
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
up() { cut -d' ' -f1 /proc/uptime; }
arg() { for w in $(cat /proc/cmdline); do case $w in "$1"=*) echo "${w#*=}"; return;; esac; done; echo "$2"; }
fail() { echo "KDUMPD-VM-FAIL $*"; sync; poweroff -f; sleep 10; }
memfree() { awk '/^MemFree:/{print $2}' /proc/meminfo; }
if [ -e /proc/vmcore ]; then MODE=capture; else MODE=first; fi
echo "KDUMPD-VM-INIT mode=$MODE uptime=$(up) memfree_kb=$(memfree)"
for m in $(cat /etc/kdumpd-vm-modules); do modprobe "$m" 2>/dev/null || echo "KDUMPD-VM-WARN modprobe $m"; done
for i in $(seq 1 20); do [ -e /sys/firmware/qemu_fw_cfg/by_name/opt ] && findfs LABEL=kdumpsys >/dev/null 2>&1 && break; sleep 0.3; done
S=/sysroot
mount -t ext4 "$(findfs LABEL=kdumpsys)" $S || fail "mount the guest root"
mount -t proc proc $S/proc; mount -t sysfs sys $S/sys; mount -o bind /dev $S/dev
mount -t tmpfs tmp $S/tmp; mount -t tmpfs run $S/run
cfg() {  # cfg NAME DEST MODE: copy fw_cfg file opt/kdumpd/NAME to DEST when the case provides it
  src=/sys/firmware/qemu_fw_cfg/by_name/opt/kdumpd/$1/raw
  [ -e "$src" ] && { cat "$src" > "$S$2"; chmod "$3" "$S$2"; }
}
cfg kdump-tools /etc/default/kdump-tools 644
cfg ssh_key /root/.ssh/kdump_id_rsa 600
cfg known_hosts /root/.ssh/known_hosts 644
cfg ssh_config /root/.ssh/config 600
[ -e $S/etc/default/kdump-tools ] || fail "no kdump-tools config in fw_cfg"
hostname kdumpd-vm

if [ "$MODE" = first ]; then
  echo 1 > /proc/sys/kernel/sysrq
  t0=$(up)
  chroot $S kdump-config load; rc=$?
  echo "KDUMPD-VM-ARM rc=$rc loaded=$(cat /sys/kernel/kexec_crash_loaded) seconds=$(echo "$t0 $(up)" | awk '{print $2-$1}')"
  [ "$rc" = 0 ] && [ "$(cat /sys/kernel/kexec_crash_loaded)" = 1 ] || fail "kdump-config load"
  sync
  echo "KDUMPD-VM-CRASH uptime=$(up)"
  echo c > /proc/sysrq-trigger
  fail "still alive after sysrq-c"
fi

# ---- capture kernel ----
echo "KDUMPD-VM-CAPTURE-START uptime=$(up) memfree_kb=$(memfree) vmcore=$(stat -c %s /proc/vmcore) cmdline=$(cat /proc/cmdline)"
# what kdump-tools-dump.service does with ExecStartPre=systemd-sysctl /etc/kdump/sysctl.conf
[ -e $S/etc/kdump/sysctl.conf ] && sysctl -p $S/etc/kdump/sysctl.conf >/dev/null
if [ "$(arg kdumpd_vm.local 1)" = 1 ]; then
  mount -t ext4 "$(findfs LABEL=kdumpout)" $S/var/crash || fail "mount target disk"
fi
if [ "$(arg kdumpd_vm.net 0)" = 1 ]; then
  # qemu user networking: the host's loopback answers on 10.0.2.2
  for m in $(cat /etc/kdumpd-vm-net-modules); do modprobe "$m" || echo "KDUMPD-VM-WARN modprobe $m"; done
  for i in $(seq 1 20); do [ -e /sys/class/net/eth0 ] && break; sleep 0.3; done
  ip link set lo up; ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 &&
    ip route add default via 10.0.2.2 || fail "network"
fi
echo "KDUMPD-VM-SAVECORE uptime=$(up) memfree_kb=$(memfree)"
chroot $S kdumpd-capture savecore
# savecore reboots by itself; reaching this line means it returned instead
echo "KDUMPD-VM-SAVECORE-RETURNED rc=$?"
sync; poweroff -f; sleep 10
