"""Full-system proof under qemu of the first boot after an install into a chroot: the capture
initrd is built at that boot, arms, captures a crash, and is not built again (first_boot.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .first_boot import FirstBootRun

pytestmark = pytest.mark.system


def test_first_boot_builds_initrd_arms_and_captures(tmp_path: Path) -> None:
    report = FirstBootRun(tmp_path).run()
    print("\n" + report.table())
    names = ", ".join(p.name for p in report.failures)
    assert not report.failures, f"failed phases: {names}\n\n{report.table()}"
    assert [p.name for p in report.phases][-1] == "dump-listed", report.table()
