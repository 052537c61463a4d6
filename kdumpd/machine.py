"""A typed snapshot of everything about the machine that decides kdump readiness.

:func:`read_system_state` reads ``/proc``, ``/sys``, ``/boot`` and ``/var`` through a
:class:`~kdumpd.system.SystemRoot` once; the parsers beside it are pure. A file that does not exist
is a fact (None, or False), not an error: a kernel without kexec support has no
``/sys/kernel/kexec_crash_loaded``, a machine without UEFI has no ``/sys/firmware/efi``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from kdumpd.capture_kernel import INITRD_LINK, KERNEL_LINK, split_cmdline
from kdumpd.errors import SystemReadError
from kdumpd.system import SystemRoot

EFI_GLOBAL_GUID = "8be4df61-93ca-11d2-aa0d-00e098032b8c"


@dataclass(frozen=True)
class IomemEntry:
    start: int
    end: int  # inclusive, as /proc/iomem prints it
    name: str
    depth: int  # nesting level (two spaces per level)

    @property
    def size(self) -> int:
        return self.end - self.start + 1


def parse_iomem(text: str) -> list[IomemEntry]:
    """/proc/iomem entries; none when every address reads 0 (the kernel hides them from
    non-root readers, and zeros would pass for a real map)."""
    out = []
    for line in text.splitlines():
        m = re.match(r"( *)([0-9a-fA-F]+)-([0-9a-fA-F]+) : (.*)", line)
        if m:
            depth = len(m.group(1)) // 2
            out.append(IomemEntry(int(m.group(2), 16), int(m.group(3), 16), m.group(4), depth))
    return out if any(e.end for e in out) else []


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as name -> value (kB for sizes, a count for HugePages_*)."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            out[name.strip()] = int(fields[0])
    return out


def parse_cpu_list(text: str) -> int:
    """Number of CPUs in a sysfs list such as ``0-3,8-11``."""
    count = 0
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        count += int(hi or lo) - int(lo) + 1
    return count


def count_cpuinfo_processors(text: str) -> int | None:
    """CPUs listed in ``/proc/cpuinfo`` (one ``processor`` line each); None if it lists none.

    The fallback when ``/sys`` is not mounted (an installer's chroot mounts only ``/proc``),
    so the default-enable check counts the machine's CPUs there too, as ``nproc`` would.
    """
    count = sum(1 for line in text.splitlines() if re.match(r"processor\s*:", line))
    return count or None


def parse_lockdown(text: str) -> str:
    """The active mode of ``/sys/kernel/security/lockdown`` (``none [integrity] …``)."""
    m = re.search(r"\[(\w+)\]", text)
    return m.group(1) if m else text.strip()


def efivar_bool(data: bytes | None) -> bool | None:
    """An efivarfs boolean: 4 bytes of attributes, then the value byte."""
    if data is None or len(data) < 5:
        return None
    return data[4] == 1


@dataclass(frozen=True)
class SystemState:
    """Facts read from a machine (or from a machine laid out under a test root)."""

    cmdline: str
    kernel_release: str
    arch: str
    cpus: int | None
    meminfo: dict[str, int] = field(compare=False)
    iomem: tuple[IomemEntry, ...]
    kexec_crash_loaded: bool | None  # None: the kernel has no kexec/kdump support
    kexec_crash_size: int | None
    fadump_enabled: bool
    fadump_registered: bool | None
    efi: bool
    secure_boot: bool | None  # None: no UEFI or variable unreadable
    setup_mode: bool | None
    securelevel: bool
    lockdown: str | None  # none / integrity / confidentiality; None: LSM absent
    sysrq: int | None
    boot_kernels: tuple[str, ...]  # releases with /boot/vmlinu[xz]-<release>
    kernel_link: str | None  # target of /var/lib/kdump/vmlinuz
    initrd_link: str | None
    coredir: str
    coredir_free: int  # bytes available in KDUMP_COREDIR (or the directory that would hold it)
    coredir_writable: bool
    kexec_cmd: str | None  # $KDUMP_COREDIR/kexec_cmd, what the last load ran

    @property
    def cmdline_tokens(self) -> list[str]:
        return split_cmdline(self.cmdline)

    @property
    def system_ram(self) -> int:
        """RAM as the kernel counts it for crashkernel=: the top-level "System RAM" of iomem.

        Falls back to MemTotal (which is smaller: it excludes the crash region and the
        kernel's own reservations) when iomem is unavailable.
        """
        ram = sum(e.size for e in self.iomem if e.depth == 0 and e.name == "System RAM")
        return ram or self.meminfo.get("MemTotal", 0) * 1024

    @property
    def swap(self) -> int:
        return self.meminfo.get("SwapTotal", 0) * 1024

    @property
    def crash_regions(self) -> tuple[IomemEntry, ...]:
        return tuple(e for e in self.iomem if e.name == "Crash kernel")

    @property
    def crash_main(self) -> IomemEntry | None:
        """The region the capture kernel loads into: the highest one when ``,high`` (or the
        fallback above 4G) added a low region for DMA below it."""
        regions = self.crash_regions
        return max(regions, key=lambda e: e.start) if regions else None

    @property
    def crash_reserved(self) -> int:
        """Bytes of the main crash region (sysfs ``kexec_crash_size``, else /proc/iomem)."""
        if self.kexec_crash_size is not None:
            return self.kexec_crash_size
        main = self.crash_main
        return main.size if main else 0

    @property
    def kexec_file_required(self) -> bool:
        """Only signed kernels can be loaded, through kexec_file_load (``kexec -s``)."""
        return bool(
            (self.secure_boot and not self.setup_mode)
            or self.securelevel
            or self.lockdown in ("integrity", "confidentiality")
        )


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def writable_by_root(path: Path) -> bool:
    """Whether root (who saves dumps) can write there: not on a read-only mount, and, when we
    are root, no other obstacle (immutable flag, ACLs on a network file system)."""
    if os.statvfs(path).f_flag & os.ST_RDONLY:
        return False
    return os.geteuid() != 0 or os.access(path, os.W_OK)


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _link_target(root: SystemRoot, system_path: str) -> str | None:
    p = root.path(system_path)
    return str(p.readlink()) if p.is_symlink() else None


def _read_arch(root: SystemRoot) -> str:
    # /proc/sys/kernel/arch exists since Linux 6.1; uname covers older kernels on "/".
    text = root.read_text("/proc/sys/kernel/arch")
    return text.strip() if text else os.uname().machine


def read_system_state(
    root: SystemRoot, coredir: str = "/var/crash", disk_free: Callable[[Path], int] = free_bytes
) -> SystemState:
    """Read the machine under ``root``; ``coredir`` is KDUMP_COREDIR (free space, kexec_cmd)."""
    release = (root.read_text("/proc/sys/kernel/osrelease") or os.uname().release).strip()
    cpus_text = root.read_text("/sys/devices/system/cpu/online")
    loaded = root.read_int("/sys/kernel/kexec_crash_loaded")
    registered = root.read_int("/sys/kernel/fadump_registered")
    sysrq = root.read_int("/proc/sys/kernel/sysrq")
    lockdown = root.read_text("/sys/kernel/security/lockdown")
    try:
        core = _nearest_existing(root.path(coredir))
        core_free, core_writable = disk_free(core), writable_by_root(core)
    except OSError as exc:
        raise SystemReadError(f"{coredir}: cannot check free space: {exc.strerror}") from exc
    kexec_cmd = root.read_text(f"{coredir}/kexec_cmd")
    boot = root.listdir("/boot")
    return SystemState(
        cmdline=(root.read_text("/proc/cmdline") or "").strip(),
        kernel_release=release,
        arch=_read_arch(root),
        cpus=(
            parse_cpu_list(cpus_text)
            if cpus_text
            else count_cpuinfo_processors(root.read_text("/proc/cpuinfo") or "")
        ),
        meminfo=parse_meminfo(root.read_text("/proc/meminfo") or ""),
        iomem=tuple(parse_iomem(root.read_text("/proc/iomem") or "")),
        kexec_crash_loaded=None if loaded is None else loaded == 1,
        kexec_crash_size=root.read_int("/sys/kernel/kexec_crash_size"),
        fadump_enabled=root.read_int("/sys/kernel/fadump_enabled") == 1,
        fadump_registered=None if registered is None else registered == 1,
        efi=root.exists("/sys/firmware/efi"),
        secure_boot=efivar_bool(
            root.read_bytes(f"/sys/firmware/efi/efivars/SecureBoot-{EFI_GLOBAL_GUID}")
        ),
        setup_mode=efivar_bool(
            root.read_bytes(f"/sys/firmware/efi/efivars/SetupMode-{EFI_GLOBAL_GUID}")
        ),
        securelevel=root.read_int("/sys/kernel/security/securelevel") == 1,
        lockdown=parse_lockdown(lockdown) if lockdown else None,
        sysrq=sysrq,
        boot_kernels=tuple(
            sorted({m.group(1) for n in boot if (m := re.fullmatch(r"vmlinu[xz]-(.+)", n))})
        ),
        kernel_link=_link_target(root, KERNEL_LINK),
        initrd_link=_link_target(root, INITRD_LINK),
        coredir=coredir,
        coredir_free=core_free,
        coredir_writable=core_writable,
        kexec_cmd=kexec_cmd.strip() if kexec_cmd else None,
    )
