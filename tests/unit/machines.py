"""Fake machines laid out under a directory, read by kdumpd through ``--root``.

:func:`build_machine` writes the files a Debian/Ubuntu machine with kdump-tools has: /proc
(cmdline, meminfo, iomem, sysctls), /sys (kexec, fadump, EFI variables, CPUs), /boot (kernel,
config), /var/lib/kdump (links, initrd, boot-time meminfo snapshot, decompressed initrd size) and
/etc/default/kdump-tools (the file Debian ships). Kernel and initrd are sparse files: only their
sizes matter to kdumpd, except for the PE header it checks under Secure Boot.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
SHIPPED_CONFIG = (DATA / "kdump-tools-1.10.7.conf").read_text()
UBUNTU_CRASHKERNEL = "crashkernel=2G-4G:320M,4G-32G:512M,32G-64G:1024M,64G-128G:2048M,128G-:4096M"
RELEASE = "6.18.0-8-generic"
BASE_CMDLINE = f"BOOT_IMAGE=/vmlinuz-{RELEASE} root=UUID=0a86b691 ro console=tty1 console=ttyS0"
MiB, GiB = 1 << 20, 1 << 30
EFI_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


@dataclass
class Machine:
    root: Path

    def write(self, system_path: str, data: str | bytes) -> Path:
        p = self.root / system_path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            p.write_bytes(data)
        else:
            p.write_text(data)
        return p

    def link(self, system_path: str, target: str) -> None:
        p = self.root / system_path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        if p.is_symlink():
            p.unlink()
        p.symlink_to(target)

    def sparse(self, system_path: str, size: int, head: bytes = b"") -> None:
        p = self.write(system_path, head)
        os.truncate(p, size)


def iomem(ram: int, crash: tuple[int, int] | None, crash_low: tuple[int, int] | None = None) -> str:
    """A plausible x86 /proc/iomem: ``ram`` bytes of System RAM, crash regions (start, size)."""
    low_top = min(ram, 3 * GiB)
    lines = [
        "00000000-00000fff : Reserved",
        "00001000-0009ffff : System RAM",
        "000a0000-000fffff : Reserved",
        f"00100000-{low_top - 1:08x} : System RAM",
        "  01000000-01ffffff : Kernel code",
    ]
    for region in (crash_low, crash):
        if region and region[0] < low_top:
            lines.append(f"  {region[0]:08x}-{region[0] + region[1] - 1:08x} : Crash kernel")
    lines.append(f"{low_top:08x}-{4 * GiB - 1:08x} : PCI Bus 0000:00")
    if ram > low_top:
        # The hole below 4G is remapped above it, as firmware does.
        lines.append(f"{4 * GiB:x}-{4 * GiB + ram - low_top - 1:x} : System RAM")
        if crash and crash[0] >= low_top:
            lines.append(f"  {crash[0]:x}-{crash[0] + crash[1] - 1:x} : Crash kernel")
    return "\n".join(lines) + "\n"


def meminfo(total: int, free: int, swap: int = 0) -> str:
    kib = 1024
    return (
        f"MemTotal:       {total // kib} kB\n"
        f"MemFree:        {free // kib} kB\n"
        f"MemAvailable:   {free // kib} kB\n"
        "Buffers:           20480 kB\n"
        "Cached:           102400 kB\n"
        f"SwapTotal:      {swap // kib} kB\n"
        "SReclaimable:      30720 kB\n"
        "Hugetlb:              0 kB\n"
    )


def pe_image(signed: bool) -> bytes:
    """The first bytes of an EFI-stub kernel: MZ, PE32+ header, certificate table entry."""
    data = bytearray(1024)
    data[:2] = b"MZ"
    struct.pack_into("<I", data, 0x3C, 0x80)
    data[0x80:0x84] = b"PE\0\0"
    opt = 0x80 + 24
    struct.pack_into("<H", data, opt, 0x20B)
    struct.pack_into(
        "<II", data, opt + 112 + 4 * 8, 0x1000 if signed else 0, 0x800 if signed else 0
    )
    return bytes(data)


def build_machine(
    root: Path,
    *,
    ram: int = 3 * GiB,
    cmdline: str = f"{BASE_CMDLINE} {UBUNTU_CRASHKERNEL}",
    crash: tuple[int, int] | None = (0x60000000, 320 * MiB),
    crash_low: tuple[int, int] | None = None,  # the extra region of crashkernel=...,high
    loaded: bool | None = True,
    cpus: int = 4,
    swap: int = 0,
    sysrq: int | None = 176,
    config: str | None = SHIPPED_CONFIG,
    secure_boot: bool | None = None,  # None: no UEFI
    signed_kernel: bool = True,
    fadump: tuple[int, int] | None = None,  # (enabled, registered)
    snapshot_used: int | None = 269 * MiB,  # early-boot used memory; None: no snapshot
) -> Machine:
    """A machine like the Ubuntu guide's 3 GB VM (ready, 320M at 0x60000000) unless told."""
    m = Machine(root)
    crash_size = crash[1] if crash else 0
    m.write("/proc/cmdline", cmdline + "\n")
    m.write("/proc/iomem", iomem(ram, crash, crash_low))
    m.write("/proc/meminfo", meminfo(ram - crash_size - 90 * MiB, ram // 2, swap))
    m.write("/proc/sys/kernel/osrelease", RELEASE + "\n")
    m.write("/proc/sys/kernel/arch", "x86_64\n")
    if sysrq is not None:
        m.write("/proc/sys/kernel/sysrq", f"{sysrq}\n")
    m.write("/sys/devices/system/cpu/online", f"0-{cpus - 1}\n" if cpus > 1 else "0\n")
    if loaded is not None:
        m.write("/sys/kernel/kexec_crash_loaded", f"{int(loaded)}\n")
        m.write("/sys/kernel/kexec_crash_size", f"{crash_size}\n")
    if fadump is not None:
        m.write("/sys/kernel/fadump_enabled", f"{fadump[0]}\n")
        m.write("/sys/kernel/fadump_registered", f"{fadump[1]}\n")
    if secure_boot is not None:
        m.write(
            f"/sys/firmware/efi/efivars/SecureBoot-{EFI_GUID}", b"\x06\0\0\0" + bytes([secure_boot])
        )
        m.write(f"/sys/firmware/efi/efivars/SetupMode-{EFI_GUID}", b"\x06\0\0\0\0")
    m.sparse(f"/boot/vmlinuz-{RELEASE}", 15 * MiB, pe_image(signed_kernel))
    m.sparse(f"/boot/initrd.img-{RELEASE}", 70 * MiB)
    m.write(
        f"/boot/config-{RELEASE}", "CONFIG_KEXEC=y\nCONFIG_CRASH_DUMP=y\nCONFIG_RELOCATABLE=y\n"
    )
    m.sparse(f"/var/lib/kdump/initrd.img-{RELEASE}", 30 * MiB)
    m.write(f"/var/lib/kdump/size_initrd.img-{RELEASE}", "60\n")
    m.link("/var/lib/kdump/vmlinuz", f"/boot/vmlinuz-{RELEASE}")
    m.link("/var/lib/kdump/initrd.img", f"/var/lib/kdump/initrd.img-{RELEASE}")
    if snapshot_used is not None:
        # used = MemTotal - (MemFree + Buffers 20M + Cached 100M + SReclaimable 30M)
        total = ram - crash_size - 90 * MiB
        m.write(f"/var/lib/kdump/mem-{RELEASE}", meminfo(total, total - snapshot_used - 150 * MiB))
    (root / "var/crash").mkdir(parents=True, exist_ok=True)
    if config is not None:
        m.write("/etc/default/kdump-tools", config)
    return m
