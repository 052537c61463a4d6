"""Run one crash-and-capture cycle under qemu (TCG) and hand back the serial log and the disks.

One cycle: the first kernel boots with ``crashkernel=``, arms the capture kernel with
``kdump-config load`` and crashes; the capture kernel runs ``kdumpd-capture savecore``, which
reboots, and ``-no-reboot`` turns that reboot into qemu's exit.  The case's configuration
reaches the guest through fw_cfg files; the guest's root file system (Python, kdumpd, and in
/boot the kernel and initramfs that ``kdump-config load`` arms) is a disk; the dump lands on the
target disk.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.qemu import direct_boot_argv

from .image import Image

TIMEOUT = int(os.environ.get("KDUMPD_VM_TIMEOUT", "300"))


@dataclass
class Run:
    serial: str
    returncode: int
    seconds: float
    target: Path
    lines: dict[str, str] = field(default_factory=dict)

    def line(self, tag: str) -> str | None:
        """The first serial line starting with ``tag`` (e.g. KDUMPD-VM-ARM)."""
        m = re.search(rf"^{re.escape(tag)}\b.*$", self.serial, re.M)
        return m.group(0) if m else None


def make_ext4(path: Path, size_mib: int, label: str, content: Path | None = None) -> None:
    path.unlink(missing_ok=True)
    subprocess.run(["truncate", "-s", f"{size_mib}M", str(path)], check=True)
    argv = ["mkfs.ext4", "-q", "-F", "-L", label, "-O", "^has_journal", str(path)]
    if label == "kdumpout":
        # the target keeps its journal: the capture ends in a forced reboot, as in real life
        argv.remove("-O")
        argv.remove("^has_journal")
    if content is not None:
        argv[1:1] = ["-d", str(content)]
    subprocess.run(argv, check=True, capture_output=True)


def boot_cycle(
    image: Image,
    work: Path,
    config: str,
    *,
    memory: str = "512M",
    crashkernel: str = "192M",
    target_mib: int = 256,
    fw_files: dict[str, str] | None = None,
    net: bool = False,
    local_target: bool = True,
    extra_append: str = "",
) -> Run:
    """Boot, crash, capture; returns when qemu has exited (or raises on timeout)."""
    work.mkdir(parents=True, exist_ok=True)
    # the guest's root: the cached tree (hard links, nothing copied) plus, in /boot, the kernel
    # and initrd that kdump-config arms (KDUMP_KERNEL, KDUMP_INITRD)
    stage = work / "sysroot"
    shutil.rmtree(stage, ignore_errors=True)
    subprocess.run(["cp", "-al", str(image.sysroot), str(stage)], check=True)
    shutil.copy(image.kernel.vmlinuz, stage / "boot/vmlinuz")
    shutil.copy(image.initrd, stage / "boot/initrd.img")
    used = subprocess.run(["du", "-sm", str(stage)], capture_output=True, text=True, check=True)
    system = work / "system.ext4"
    make_ext4(system, int(used.stdout.split()[0]) * 12 // 10 + 32, "kdumpsys", stage)
    shutil.rmtree(stage)
    target = work / "target.ext4"
    make_ext4(target, target_mib, "kdumpout")
    files = {"kdump-tools": config, **(fw_files or {})}
    fw_args: list[str] = []
    for name, text in files.items():
        p = work / f"fw-{name}"
        p.write_text(text)
        fw_args += ["-fw_cfg", f"name=opt/kdumpd/{name},file={p}"]
    append = (
        f"console=ttyS0 panic=-1 crashkernel={crashkernel} kdumpd_vm.net={int(net)} "
        f"kdumpd_vm.local={int(local_target)} {extra_append}"
    ).strip()
    nic = ["-nic", "user,model=virtio-net-pci"] if net else ["-nic", "none"]
    serial = work / "serial.log"
    argv = [
        *direct_boot_argv(
            memory=memory,
            kernel=image.kernel.vmlinuz,
            initrd=image.initrd,
            append=append,
            serial_log=serial,
        ),
        "-no-reboot",
        *nic,
        "-device",
        "vmcoreinfo",
        "-drive",
        f"file={system},if=virtio,format=raw",
        "-drive",
        f"file={target},if=virtio,format=raw",
        *fw_args,
    ]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(
            ["nice", *argv], capture_output=True, text=True, timeout=TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as exc:
        log = serial.read_text(errors="replace") if serial.exists() else ""
        raise AssertionError(
            f"qemu timed out after {TIMEOUT} s; guest log tail:\n{log[-3000:]}"
        ) from exc
    seconds = time.monotonic() - t0
    log = serial.read_text(errors="replace")
    if proc.returncode != 0:
        raise AssertionError(f"qemu failed ({proc.returncode}): {proc.stderr}\n{log[-3000:]}")
    return Run(log, proc.returncode, seconds, target)


def extract(target: Path, dest: Path) -> Path:
    """Copy the target disk's files out, after replaying its journal as a mount would.

    The capture ends with a forced reboot, so the journal may hold metadata that is not yet in
    place; e2fsck replays it (and must find nothing else to fix).
    """
    fsck = subprocess.run(["e2fsck", "-fy", str(target)], capture_output=True, text=True)
    if fsck.returncode not in (0, 1):
        raise AssertionError(f"e2fsck of the target disk: rc {fsck.returncode}\n{fsck.stdout}")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["debugfs", "-R", f"rdump / {dest}", str(target)], check=True, capture_output=True
    )
    return dest
