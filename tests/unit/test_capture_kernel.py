"""The capture kernel's command line, and which kernel and initrd it boots."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdumpd.capture_kernel import (
    CaptureImages,
    CaptureKernelError,
    capture_cmdline,
    locate_capture_kernel,
    split_cmdline,
)
from kdumpd.config import parse_config
from kdumpd.system import SystemRoot
from tests.unit.machines import RELEASE, build_machine

TAIL = "reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb"


@pytest.mark.parametrize(
    ("current", "config", "expected"),
    [
        (  # the guide's machine: crashkernel= goes, the default append and panic= come
            "BOOT_IMAGE=/vmlinuz-6.18.0-8-generic root=UUID=0a86 ro console=tty1"
            " crashkernel=2G-4G:320M,4G-:512M",
            "",
            f"BOOT_IMAGE=/vmlinuz-6.18.0-8-generic root=UUID=0a86 ro console=tty1 {TAIL} panic=10",
        ),
        (
            'ro hugepages=64 hugepagesz=2M abm=1 crashkernel=256M quiet foo="a b" panic=30',
            "",
            f'ro quiet foo="a b" panic=30 {TAIL}',
        ),
        ("ro panic=0", "", f"ro panic=0 {TAIL} panic=10"),  # panic=0 would hang
        (  # init arguments stay after "--"; ours go before it, where the kernel reads them
            "ro crashkernel=256M -- --init-flag",
            "",
            f"ro {TAIL} panic=10 -- --init-flag",
        ),
        (  # KDUMP_CMDLINE replaces /proc/cmdline and is not filtered
            "ro crashkernel=256M",
            'KDUMP_CMDLINE="root=/dev/sda1 hugepages=2"',
            f"root=/dev/sda1 hugepages=2 {TAIL} panic=10",
        ),
        (  # an APPEND without systemd.unit still boots the capture unit
            "ro systemd.unit=multi-user.target crashkernel=256M",
            'KDUMP_CMDLINE_APPEND="nr_cpus=1"',
            "ro systemd.unit=multi-user.target nr_cpus=1"
            " systemd.unit=kdump-tools-dump.service panic=10",
        ),
    ],
)
def test_capture_cmdline(current: str, config: str, expected: str) -> None:
    assert capture_cmdline(current, parse_config(config)) == expected


def test_split_cmdline_keeps_quoted_values() -> None:
    assert split_cmdline(' a="b c"  d\te ') == ['a="b c"', "d", "e"]


def test_links_from_the_config(tmp_path: Path) -> None:
    build_machine(tmp_path)
    root = SystemRoot(tmp_path)
    config = parse_config((tmp_path / "etc/default/kdump-tools").read_text())
    assert locate_capture_kernel(root, config, RELEASE) == CaptureImages(
        "/var/lib/kdump/vmlinuz", "/var/lib/kdump/initrd.img", "config"
    )
    (tmp_path / "var/lib/kdump/initrd.img").unlink()
    with pytest.raises(CaptureKernelError, match=r"KDUMP_INITRD /var/lib/kdump/initrd\.img does"):
        locate_capture_kernel(root, config, RELEASE)
    (tmp_path / f"boot/vmlinuz-{RELEASE}").unlink()  # the link now dangles
    with pytest.raises(CaptureKernelError) as exc:
        locate_capture_kernel(root, config, RELEASE)
    assert exc.value.code == "kernel-missing"


def test_running_kernel_when_unset(tmp_path: Path) -> None:
    build_machine(tmp_path)
    root = SystemRoot(tmp_path)
    config = parse_config("USE_KDUMP=1")
    assert locate_capture_kernel(root, config, RELEASE) == CaptureImages(
        f"/boot/vmlinuz-{RELEASE}", f"/boot/initrd.img-{RELEASE}", "running-kernel"
    )
    (tmp_path / f"boot/config-{RELEASE}").write_text("CONFIG_RELOCATABLE=n\n")
    with pytest.raises(CaptureKernelError) as exc:
        locate_capture_kernel(root, config, RELEASE)
    assert exc.value.code == "kernel-not-relocatable"
    assert "not relocatable" in str(exc.value)
