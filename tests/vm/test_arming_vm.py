"""Arming a real kernel (qemu TCG, Debian 12's 6.1) whose crashkernel= reservation is too small.

kexec_file_load fails with EADDRNOTAVAIL both when nothing is reserved and when the images do not
fit; kdump-config must say which, in one line, and leave nothing loaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from . import image, machine

pytestmark = pytest.mark.vm

CONFIG = "USE_KDUMP=1\nKDUMP_KERNEL=/boot/vmlinuz\nKDUMP_INITRD=/boot/initrd.img\n"


def test_a_reservation_too_small_is_explained(tmp_path: Path) -> None:
    run = machine.boot_cycle(image.build(), tmp_path, CONFIG, crashkernel="16M")
    arm = run.line("KDUMPD-VM-ARM")
    assert arm is not None and "rc=1" in arm and "loaded=0" in arm, run.serial[-3000:]
    said = [line for line in run.serial.splitlines() if line.startswith("kdump-config:")]
    print("\n".join(said))  # shown with pytest -s: the message a user gets
    assert any("do not fit in the 16 MiB crashkernel reservation" in s for s in said), said
    assert "Traceback" not in run.serial and "internal error" not in run.serial
