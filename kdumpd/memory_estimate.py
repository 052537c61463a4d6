"""How much crash memory this machine needs, and whether kdump should be on by default.

:func:`suggested_size_mib` is kdump-tools' ``crashkernel_estimate`` (the ``crashkernel suggested
size`` line of ``kdump-config show``) plus the capture tool's own memory, all in MiB:

* kernel file size x 6 (x86, s390x), x 2 (ppc) or x 4 (others): the decompressed kernel;
* + initrd file size + its decompressed size (recorded when the kdump initrd was built);
* + memory used early in this boot: MemTotal - (MemFree + Buffers + Cached + SReclaimable) -
  Hugetlb, from the ``/proc/meminfo`` snapshot saved before ``basic.target``;
* - on x86 only, what the extra CPUs and RAM of the normal boot cost: (CPUs - 1) at 5000, 3500,
  2500 KiB per CPU in buckets up to 32, 64 and beyond, plus (GiB + 1) at 6000 KiB for the first
  32 GiB and 600 KiB per GiB after;
* + kdumpd-capture's own memory (:data:`CAPTURE_TOOL_MIB`), which kdump-tools' formula, sized
  for makedumpfile, leaves out;
* never below decompressed kernel + both initrd sizes + 32 + kdumpd-capture's own memory.

File sizes are rounded up to whole MiB, as ``du -m`` does. :func:`default_enable_checks` is
Ubuntu's ``kdump_set_default`` (installer heuristic), one result per condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from kdumpd.capture_kernel import KDUMP_DIR, resolve_link
from kdumpd.crashkernel import GiB, MiB
from kdumpd.machine import parse_meminfo
from kdumpd.system import SystemRoot

MIN_EXTRA_MIB = 32
# What kdumpd-capture holds beyond makedumpfile: Python, numpy and zstd state, its anonymous
# peak. Measured (bench/capture_bench.py): 23-27 MiB against makedumpfile's 0.6 MiB, flat in
# the vmcore's size; tests/integration bound it at 32 MiB. Without this term the suggestion is
# too small for us: on a 2 GiB, 2 CPU Debian 12 guest kdump-tools' formula says 107-115M, and
# the full-system capture at crashkernel=112M saved dmesg, then crawled (3 % in 3 minutes,
# MemAvailable 12 MiB); 120M took 699 s (lowest MemAvailable 10 MiB) and 128M 21 s (22 MiB).
# In the capture kernel (one CPU) the service's anonymous peak is now 23-24 MiB, and 120M
# takes 17-21 s; 112M still pages.
CAPTURE_TOOL_MIB = 24


def early_boot_used_kib(meminfo_kib: Mapping[str, int]) -> int:
    """Used memory in a meminfo snapshot, as ``free`` counts it, minus huge pages."""
    free = sum(meminfo_kib.get(k, 0) for k in ("MemFree", "Buffers", "Cached", "SReclaimable"))
    return meminfo_kib["MemTotal"] - free - meminfo_kib.get("Hugetlb", 0)


def cpu_ram_surplus_mib(arch: str, cpus: int, mem_total_kib: int) -> int:
    """Memory the normal boot spends on CPUs and RAM that the 1-CPU capture kernel won't."""
    if arch not in ("x86_64", "i386", "i686"):
        return 0
    extra_cpus = cpus - 1
    gib = mem_total_kib // (1 << 20) + 1  # rounded down, then +1 so 1.9G counts as 2
    cpu_kib = (
        min(extra_cpus, 32) * 5000
        + min(max(extra_cpus - 32, 0), 32) * 3500
        + max(extra_cpus - 64, 0) * 2500
    )
    ram_kib = min(gib, 32) * 6000 + max(gib - 32, 0) * 600
    return (cpu_kib + ram_kib) // 1024


def kernel_factor(arch: str) -> int:
    """Decompressed/compressed kernel size ratio kdump-tools measured per architecture."""
    if arch in ("x86_64", "i386", "i686", "s390x"):
        return 6
    if arch in ("ppc64le", "ppc64", "powerpc"):
        return 2
    return 4


@dataclass(frozen=True)
class Estimate:
    """The suggested crashkernel size in MiB, or why it is unknown."""

    mib: int | None
    reason: str | None = None  # set when mib is None
    clamped: bool = False  # raised to the minimum

    def __str__(self) -> str:
        return f"{self.mib}M" if self.mib is not None else f"Unknown ({self.reason})"


def suggested_size_mib(
    *,
    arch: str,
    cpus: int,
    meminfo_kib: Mapping[str, int],
    kernel_mib: int,
    initrd_mib: int,
    initrd_decompressed_mib: int,
) -> Estimate:
    """kdump-tools' estimate from already gathered inputs (see the module docstring)."""
    kernel = kernel_factor(arch) * kernel_mib
    initrd = initrd_mib + initrd_decompressed_mib
    used = early_boot_used_kib(meminfo_kib) // 1024
    surplus = cpu_ram_surplus_mib(arch, cpus, meminfo_kib["MemTotal"])
    estimate = kernel + initrd + used - surplus + CAPTURE_TOOL_MIB
    minimum = kernel + initrd + MIN_EXTRA_MIB + CAPTURE_TOOL_MIB
    if estimate < minimum:
        return Estimate(minimum, clamped=True)
    return Estimate(estimate)


def _du_mib(root: SystemRoot, system_path: str) -> int:
    size = root.path(resolve_link(root, system_path)).stat().st_size
    return -(-size // MiB)


def estimate_for_machine(
    root: SystemRoot, arch: str, cpus: int, kernel: str | None, initrd: str | None
) -> Estimate:
    """The estimate for the capture kernel and initrd at these system paths, read under root.

    Like kdump-tools, the kernel release comes from the initrd's name (``initrd.img-<rel>``),
    and picks ``/var/lib/kdump/size_initrd.img-<rel>`` and the boot snapshot ``mem-<rel>``.
    """
    target = resolve_link(root, initrd) if initrd else ""
    release = target.rsplit("/", 1)[-1].partition("initrd.img-")[2]
    if not release or not kernel:
        return Estimate(None, "can't parse kernel version from initrd filename")
    size_text = root.read_text(f"{KDUMP_DIR}/size_initrd.img-{release}")
    if size_text is None:
        return Estimate(None, "can't find decompressed initrd size")
    if not size_text.strip().isdigit() or int(size_text) == 0:
        return Estimate(None, "zero-sized decompressed initrd size")
    snapshot = root.read_text(f"{KDUMP_DIR}/mem-{release}")
    meminfo = parse_meminfo(snapshot or "")
    if "MemTotal" not in meminfo:
        return Estimate(
            None, "can't find early boot memory info, it's only available after a reboot"
        )
    try:
        kernel_mib, initrd_mib = _du_mib(root, kernel), _du_mib(root, target)
    except OSError as exc:
        return Estimate(None, f"can't read {exc.filename}: {exc.strerror}")
    return suggested_size_mib(
        arch=arch,
        cpus=cpus,
        meminfo_kib=meminfo,
        kernel_mib=kernel_mib,
        initrd_mib=initrd_mib,
        initrd_decompressed_mib=int(size_text),
    )


@dataclass(frozen=True)
class Check:
    """One condition of the default-enable heuristic."""

    name: str
    ok: bool
    detail: str


def default_enable_checks(
    *,
    arch: str,
    cpus: int | None,
    ram_bytes: int,
    swap_bytes: int,
    var_free_bytes: int | None,
    uefi: bool,
) -> list[Check]:
    """Ubuntu's conditions for enabling kdump by default; all must hold."""
    total = ram_bytes + swap_bytes
    if arch in ("x86_64", "s390x"):
        arch_ok, arch_detail = True, f"{arch} is supported"
    elif arch == "aarch64":
        arch_ok = uefi
        arch_detail = "aarch64 with UEFI" if uefi else "aarch64 without UEFI is not enabled"
    else:
        arch_ok, arch_detail = False, f"{arch} is not one of x86_64, s390x, aarch64 (UEFI)"
    need_var = 5 * total
    if var_free_bytes is None:
        var_ok, var_detail = False, "free space in /var is unknown"
    else:
        var_ok = var_free_bytes > need_var
        var_detail = f"{_gib(var_free_bytes)} free in /var, need more than {_gib(need_var)}"
    return [
        Check("architecture", arch_ok, arch_detail),
        Check(
            "cpus",
            cpus is not None and cpus >= 4,
            f"{cpus if cpus is not None else 'an unknown number of'} CPU threads, need at least 4",
        ),
        Check(
            "memory",
            6 * GiB <= total < 2048 * GiB,
            f"{_gib(total)} of RAM and swap, need at least 6 GiB and less than 2 TiB",
        ),
        Check("var-space", var_ok, var_detail),
    ]


def _gib(n: int) -> str:
    return f"{n / GiB:.1f} GiB"
