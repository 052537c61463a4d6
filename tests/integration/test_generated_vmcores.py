"""The generated vmcores are what tests rely on them to be (tests/vmcores.py)."""

from __future__ import annotations

import re

import pytest
from vmcores import GeneratedVmcore

from kdumpd.vmcore.elf import ElfVmcore
from kdumpd.vmcore.vmcoreinfo import parse_vmcoreinfo

pytestmark = pytest.mark.vmcore


def meminfo_kib(made: GeneratedVmcore, key: str) -> int:
    match = re.search(rf"\b{key}: (\d+) kB", made.info.read_text())
    assert match, f"{made.info} has no {key}"
    return int(match.group(1))


def release_of(made: GeneratedVmcore) -> str:
    with ElfVmcore(made.vmcore) as core:
        assert core.vmcoreinfo_raw is not None
        return parse_vmcoreinfo(core.vmcoreinfo_raw).osrelease


def test_crash_kernel_captures_are_complete(kexec_vmcore: GeneratedVmcore) -> None:
    info = kexec_vmcore.info.read_text()
    assert "mode: kexec" in info
    assert f"vmcore: {kexec_vmcore.vmcore.stat().st_size} bytes" in info
    assert kexec_vmcore.reference_kdump.stat().st_size > 0
    assert "makedumpfile Completed." in kexec_vmcore.show_stats.read_text()
    assert kexec_vmcore.dmesg.read_bytes().startswith(b"[    0.000000] Linux version")


def test_debian_13_vmcore_runs_6_12_with_transparent_huge_pages(
    vmcore_6_12: GeneratedVmcore,
) -> None:
    assert release_of(vmcore_6_12).startswith("6.12.")
    # memhog's anonymous memory sits in huge pages: the case makedumpfile 1.7.2 gets wrong
    assert meminfo_kib(vmcore_6_12, "AnonHugePages") >= 128 * 1024


def test_debian_12_1g_vmcore_differs_from_the_fixture(vmcore_6_1_1g: GeneratedVmcore) -> None:
    assert release_of(vmcore_6_1_1g).startswith("6.1.")
    assert meminfo_kib(vmcore_6_1_1g, "MemTotal") > 700 * 1024  # the fixture has 465 MB
    assert meminfo_kib(vmcore_6_1_1g, "AnonPages") > 150 * 1024  # the fixture has 96 MB


def test_qemu_vmcore_has_the_qemu_layout(vmcore_qemu: GeneratedVmcore) -> None:
    with vmcore_qemu.vmcore.open("rb") as f:
        head = f.read(64)
    e_phoff = int.from_bytes(head[32:40], "little")
    assert e_phoff != 64  # QEMU 7.2 puts the section headers first
    assert vmcore_qemu.makedumpfile_input.name == "vmcore.fixed.elf"
    assert release_of(vmcore_qemu).startswith("6.1.")
