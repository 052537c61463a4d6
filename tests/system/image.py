"""The Debian 12 disk image the full-system test boots, built once and cached.

Two cache levels under ``/var/tmp/kdumpd-test-cache/system/`` (``KDUMPD_TEST_CACHE`` moves it):

* ``rootfs-<key>.tar``: an mmdebstrap of Debian 12 with systemd, dbus, polkitd, the kernel and
  every package kdumpd depends on (but not kdumpd), keyed by the package list;
* ``base-<key>.img``: that tree as an ext4 image (root on the whole disk, ``root=/dev/vda``), with
  the test's guest agent, a serial console, an unprivileged user and the kernel/initrd copied out
  beside it for qemu's direct kernel boot, keyed by the rootfs key and the files added.

Each run boots a throw-away qcow2 overlay of the base image, so the cache is never modified. The
kdumpd package itself is installed in the running guest, as a user would; only the first-boot
test (``build_installed_image``) installs it into the tree before the image is made, as an
installer would, in an image of the run's own.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CACHE = Path(os.environ.get("KDUMPD_TEST_CACHE", "/var/tmp/kdumpd-test-cache")) / "system"
HERE = Path(__file__).resolve().parent
SUITE = "bookworm"
# A current Debian 12, as users run it: the point release plus security and stable updates.
SOURCES = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)

# Everything the guest needs before kdumpd is installed: init, bus, polkit, the kernel and the
# .deb's own dependencies, so that `apt install ./kdumpd_*.deb` works offline in the guest.
PACKAGES = (
    "systemd-sysv",
    "udev",
    "dbus",
    "polkitd",
    "linux-image-amd64",
    "initramfs-tools",
    "zstd",
    "kexec-tools",
    "kmod",
    "e2fsprogs",
    "procps",
    "ucf",
    "python3",
    "python3-dbus-fast",
    "python3-pystemd",
    "python3-zstandard",
    "python3-numpy",
    "python3-lzo",
)

# Files of the image that the test itself adds: part of the base image's cache key.
GUEST_FILES = (HERE / "guest_agent.py", HERE / "image.py")
GUEST_USER = "tester"
# A name systemd needs no escaping for: its device unit is dev-virtio\x2dports-<name>.device.
AGENT_PORT = "kdumpdtestagent"


# Test instrument for the capture boot only: once a second, the capture kernel's available memory,
# its major page faults so far, and the dump service's cgroup memory (total, anonymous, page cache,
# dirty, under writeback) go to the console, so the test can report what the capture really used
# (the crashkernel= default and the suggested size are checked against it) and whether it paged.
MEMWATCH_SCRIPT = """\
#!/bin/sh
cg=/sys/fs/cgroup/system.slice/kdump-tools-dump.service
while :; do
    c=$(cat $cg/memory.current 2>/dev/null)
    stat=/dev/null
    [ -r $cg/memory.stat ] && stat=$cg/memory.stat
    s=$(awk 'FILENAME == "/proc/meminfo" && $1 == "MemAvailable:" { a = $2 }
             FILENAME == "/proc/vmstat" && $1 == "pgmajfault" { m = $2 }
             FILENAME != "/proc/meminfo" && FILENAME != "/proc/vmstat" &&
                 ($1 == "anon" || $1 == "file" || $1 == "file_dirty" ||
                  $1 == "file_writeback") { v = v " " $1 "=" $2 }
             END { print "avail_kb=" a " majfault=" m v }' /proc/meminfo /proc/vmstat $stat)
    echo "KDUMPD-TEST-MEM $s service_bytes=$c" >/dev/console
    sleep 1
done
"""
MEMWATCH_UNIT = """\
[Unit]
Description=kdumpd full-system test: memory use of the capture boot
DefaultDependencies=no

[Service]
ExecStart=/usr/local/sbin/kdumpd-test-memwatch
"""
MEMWATCH_DROPIN = """\
[Unit]
Wants=kdumpd-test-memwatch.service
"""


class ImageError(RuntimeError):
    """The image could not be built (mmdebstrap, mkfs or a guest file failed)."""


@dataclass(frozen=True)
class BaseImage:
    disk: Path  # raw ext4, root on the whole disk
    kernel: Path  # /boot/vmlinuz-<release> copied out for -kernel
    initrd: Path  # the normal boot's initrd for -initrd
    release: str  # kernel release, e.g. 6.1.0-56-amd64


def _key(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little") + part)
    return digest.hexdigest()[:16]


def rootfs_key() -> str:
    return _key("\n".join(SOURCES).encode(), "\n".join(PACKAGES).encode())


def _run(cmd: list[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-3000:]
        raise ImageError(f"{cmd[0]} failed with status {result.returncode}:\n{tail}")


def build_rootfs() -> Path:
    """The cached mmdebstrap tarball, built (a few minutes, network) only when missing."""
    out = CACHE / f"rootfs-{rootfs_key()}.tar"
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}.tar")  # mmdebstrap picks the format by suffix
    _run(
        [
            "nice",
            "mmdebstrap",
            "--mode=root",
            "--variant=minbase",
            "--include=" + ",".join(PACKAGES),
            # Docs, man pages and translations are dead weight in a test image.
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            # kexec-tools must not turn the guest's reboots into kexec reboots.
            "--essential-hook=echo 'kexec-tools kexec-tools/load_kexec boolean false'"
            ' | chroot "$1" debconf-set-selections',
            SUITE,
            str(tmp),
            *SOURCES,
        ]
    )
    tmp.rename(out)
    _prune("rootfs-*.tar", keep=out)
    return out


def _prune(pattern: str, keep: Path) -> None:
    """Drop cache entries of older keys: each is hundreds of MB."""
    for old in CACHE.glob(pattern):
        if old.name.split(".")[0] != keep.name.split(".")[0]:
            old.unlink()


GUEST_SETUP = f"""\
set -e
echo kdumpd-test > /etc/hostname
printf '127.0.0.1 localhost\\n127.0.1.1 kdumpd-test\\n' > /etc/hosts
printf '/dev/vda / ext4 rw,errors=remount-ro 0 1\\n' > /etc/fstab
passwd -d root >/dev/null
useradd --create-home --shell /bin/bash {GUEST_USER}
systemctl enable kdumpd-test-agent.service >/dev/null 2>&1
# No network in the guest: nothing should wait for it.
systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1 || true
"""

AGENT_UNIT = f"""\
[Unit]
Description=kdumpd full-system test agent (virtio-serial)
DefaultDependencies=no
After=systemd-udevd.service dev-virtio\\x2dports-{AGENT_PORT}.device
BindsTo=dev-virtio\\x2dports-{AGENT_PORT}.device

[Service]
ExecStart=/usr/bin/python3 /usr/local/sbin/kdumpd-test-agent /dev/virtio-ports/{AGENT_PORT}
Restart=always
RestartSec=1

[Install]
# Not sysinit.target: the capture boot (systemd.unit=kdump-tools-dump.service) must not start it.
WantedBy=multi-user.target
"""


def build_base_image() -> BaseImage:
    """The cached ext4 base image with the agent, plus its kernel and initrd."""
    tar = build_rootfs()
    key = _key(tar.name.encode(), *(p.read_bytes() for p in GUEST_FILES))
    disk = CACHE / f"base-{key}.img"
    kernel = CACHE / f"base-{key}.vmlinuz"
    initrd = CACHE / f"base-{key}.initrd"
    release_file = CACHE / f"base-{key}.release"
    if not disk.exists():
        _assemble(tar, disk, kernel, initrd, release_file)
        _prune("base-*", keep=disk)
    return BaseImage(disk, kernel, initrd, release_file.read_text().strip())


def build_installed_image(deb: Path, workdir: Path) -> BaseImage:
    """The base image with ``deb`` installed offline, as an installer or mmdebstrap installs
    it: dpkg in a chroot of the tree, nothing running, kdump enabled by the debconf answer.
    Built in ``workdir`` for each run (the .deb changes), not cached."""
    disk, kernel, initrd, release_file = (
        workdir / f"installed.{suffix}" for suffix in ("img", "vmlinuz", "initrd", "release")
    )
    _assemble(
        build_rootfs(),
        disk,
        kernel,
        initrd,
        release_file,
        customize=lambda root: _install_in_chroot(root, deb),
    )
    return BaseImage(disk, kernel, initrd, release_file.read_text().strip())


def _install_in_chroot(root: Path, deb: Path) -> None:
    # /proc lets ischroot see the chroot; policy-rc.d keeps dpkg from starting services.
    policy = root / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    shutil.copyfile(deb, root / "root/kdumpd.deb")
    _run(["mount", "-t", "proc", "proc", str(root / "proc")])
    try:
        _run(
            [
                "chroot",
                str(root),
                "/bin/sh",
                "-c",
                "echo 'kdumpd kdumpd/use_kdump boolean true' | debconf-set-selections"
                " && dpkg -i /root/kdumpd.deb",
            ]
        )
    finally:
        _run(["umount", str(root / "proc")])
        policy.unlink()
        (root / "root/kdumpd.deb").unlink()
    built = list((root / "var/lib/kdump").glob("initrd.img-*"))
    if built:
        raise ImageError(f"the install in a chroot built a capture initrd already: {built}")


def _assemble(
    tar: Path,
    disk: Path,
    kernel: Path,
    initrd: Path,
    release_file: Path,
    customize: Callable[[Path], None] | None = None,
) -> None:
    with tempfile.TemporaryDirectory(dir=disk.parent, prefix="assemble-") as tmpdir:
        root = Path(tmpdir) / "root"
        root.mkdir()
        _run(["tar", "-C", str(root), "-xf", str(tar)])
        agent = root / "usr/local/sbin/kdumpd-test-agent"
        agent.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / "guest_agent.py", agent)
        agent.chmod(0o755)
        memwatch = root / "usr/local/sbin/kdumpd-test-memwatch"
        memwatch.write_text(MEMWATCH_SCRIPT)
        memwatch.chmod(0o755)
        units = root / "etc/systemd/system"
        (units / "kdumpd-test-agent.service").write_text(AGENT_UNIT)
        (units / "kdumpd-test-memwatch.service").write_text(MEMWATCH_UNIT)
        (units / "kdump-tools-dump.service.d").mkdir()
        (units / "kdump-tools-dump.service.d/kdumpd-test-memwatch.conf").write_text(MEMWATCH_DROPIN)
        _run(["chroot", str(root), "/bin/sh", "-c", GUEST_SETUP])
        if customize is not None:
            customize(root)
        vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))
        if len(vmlinuz) != 1:
            raise ImageError(f"expected one kernel in the rootfs, found {vmlinuz}")
        release = vmlinuz[0].name.removeprefix("vmlinuz-")
        tmp = disk.with_suffix(".tmp")
        _run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(tmp), "3G"])
        shutil.copyfile(vmlinuz[0], kernel)
        shutil.copyfile(root / f"boot/initrd.img-{release}", initrd)
        release_file.write_text(release + "\n")
        tmp.rename(disk)


def make_overlay(base: BaseImage, workdir: Path) -> Path:
    """A qcow2 overlay on the base image: the run writes there, the cache stays clean."""
    overlay = workdir / "disk.qcow2"
    _run(
        [
            "qemu-img",
            "create",
            "-q",
            "-f",
            "qcow2",
            "-F",
            "raw",
            "-b",
            str(base.disk),
            str(overlay),
        ]
    )
    return overlay
