"""Full-system proof under qemu: the .deb on Debian 12, armed at boot, crash, capture, dump listed.

One test, because every phase needs the one before it: the phases and their times are printed
(``pytest -s`` or the -ra summary shows them) and the first failing phase is the failure message.
Needs root, qemu-system-x86_64, mmdebstrap and network access to Debian's archive the first time
(the root filesystem is cached under /var/tmp/kdumpd-test-cache/system/).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .fullsystem import FullSystemRun, assert_passed

pytestmark = pytest.mark.system


def test_install_arm_crash_capture_list(tmp_path: Path) -> None:
    assert_passed(FullSystemRun(tmp_path).run(), "drgn")
