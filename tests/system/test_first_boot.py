"""Full-system proof under qemu of the first boot after an install into a chroot: the capture
initrd is built at that boot, arms, captures a crash, and is not built again (first_boot.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .first_boot import FirstBootRun
from .fullsystem import assert_passed

pytestmark = pytest.mark.system


def test_first_boot_builds_initrd_arms_and_captures(tmp_path: Path) -> None:
    assert_passed(FirstBootRun(tmp_path).run(), "dump-listed")
