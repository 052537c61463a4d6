"""Suggested crashkernel size (kdump-tools' estimator) and the default-enable heuristic."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdumpd.crashkernel import GiB
from kdumpd.memory_estimate import (
    CAPTURE_TOOL_MIB,
    cpu_ram_surplus_mib,
    default_enable_checks,
    estimate_for_machine,
    suggested_size_mib,
)
from kdumpd.system import SystemRoot
from tests.unit.machines import RELEASE, build_machine

KIB_PER_GIB = 1 << 20


def test_estimate_arithmetic() -> None:
    # kdump-tools' 15M kernel x6 + 30M + 60M initrd + 269M used - 32M surplus (3 extra CPUs,
    # 3 GiB) = 417M, and kdumpd-capture's own 24M
    meminfo = {
        "MemTotal": 2662 * 1024,
        "MemFree": (2662 - 269 - 150) * 1024,
        "Buffers": 20 * 1024,
        "Cached": 100 * 1024,
        "SReclaimable": 30 * 1024,
    }
    est = suggested_size_mib(
        arch="x86_64",
        cpus=4,
        meminfo_kib=meminfo,
        kernel_mib=15,
        initrd_mib=30,
        initrd_decompressed_mib=60,
    )
    assert CAPTURE_TOOL_MIB == 24
    assert (est.mib, est.clamped, str(est)) == (441, False, "441M")
    arm = suggested_size_mib(
        arch="aarch64",
        cpus=64,
        meminfo_kib=meminfo,
        kernel_mib=15,
        initrd_mib=30,
        initrd_decompressed_mib=60,
    )
    assert arm.mib == 4 * 15 + 90 + 269 + 24  # no surplus outside x86
    tiny = suggested_size_mib(
        arch="x86_64",
        cpus=256,
        meminfo_kib=meminfo,
        kernel_mib=15,
        initrd_mib=30,
        initrd_decompressed_mib=60,
    )
    assert (tiny.mib, tiny.clamped) == (90 + 90 + 32 + 24, True)


@pytest.mark.parametrize(
    ("cpus", "gib", "surplus"),
    [
        (1, 0, 6000 // 1024),
        (33, 31, (32 * 5000 + 32 * 6000) // 1024),
        (65, 40, (32 * 5000 + 32 * 3500 + 32 * 6000 + 9 * 600) // 1024),
        (100, 200, (32 * 5000 + 32 * 3500 + 35 * 2500 + 32 * 6000 + 169 * 600) // 1024),
    ],
)
def test_cpu_ram_surplus_buckets(cpus: int, gib: int, surplus: int) -> None:
    assert cpu_ram_surplus_mib("x86_64", cpus, gib * KIB_PER_GIB) == surplus


def test_estimate_from_machine_files_and_unknown_reasons(tmp_path: Path) -> None:
    build_machine(tmp_path)
    root = SystemRoot(tmp_path)
    kernel, initrd = "/var/lib/kdump/vmlinuz", "/var/lib/kdump/initrd.img"
    assert str(estimate_for_machine(root, "x86_64", 4, kernel, initrd)) == "441M"
    assert str(estimate_for_machine(root, "x86_64", 4, kernel, None)) == (
        "Unknown (can't parse kernel version from initrd filename)"
    )
    (tmp_path / f"var/lib/kdump/mem-{RELEASE}").unlink()
    assert str(estimate_for_machine(root, "x86_64", 4, kernel, initrd)) == (
        "Unknown (can't find early boot memory info, it's only available after a reboot)"
    )
    (tmp_path / f"var/lib/kdump/size_initrd.img-{RELEASE}").write_text("")
    assert "zero-sized decompressed initrd size" in str(
        estimate_for_machine(root, "x86_64", 4, kernel, initrd)
    )
    (tmp_path / f"var/lib/kdump/size_initrd.img-{RELEASE}").unlink()
    assert "can't find decompressed initrd size" in str(
        estimate_for_machine(root, "x86_64", 4, kernel, initrd)
    )


def test_default_enable_checks() -> None:
    good = default_enable_checks(
        arch="x86_64", cpus=4, ram_bytes=8 * GiB, swap_bytes=0, var_free_bytes=41 * GiB, uefi=False
    )
    assert [c.ok for c in good] == [True, True, True, True]
    bad = default_enable_checks(
        arch="aarch64",
        cpus=2,
        ram_bytes=3 * 1024 * GiB,
        swap_bytes=0,
        var_free_bytes=100 * GiB,
        uefi=False,
    )
    assert [(c.name, c.ok) for c in bad] == [
        ("architecture", False),
        ("cpus", False),
        ("memory", False),
        ("var-space", False),
    ]
    assert bad[2].detail == "3072.0 GiB of RAM and swap, need at least 6 GiB and less than 2 TiB"
    arm_uefi = default_enable_checks(
        arch="aarch64", cpus=8, ram_bytes=6 * GiB, swap_bytes=0, var_free_bytes=None, uefi=True
    )
    assert [c.ok for c in arm_uefi] == [True, True, True, False]
