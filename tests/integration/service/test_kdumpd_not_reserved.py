"""A machine without crashkernel= memory: Arm fails with the NotReserved error, and says why."""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from busenv import MANAGER, Bus
from machines import BASE_CMDLINE, Machine, build_machine

pytestmark = pytest.mark.bus


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    root = Path(tempfile.mkdtemp(prefix="kdumpd-machine-"))
    try:
        yield build_machine(root, cmdline=BASE_CMDLINE, crash=None, loaded=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_arm_without_reservation_is_not_reserved(bus: Bus, kdumpd: Any, machine: Machine) -> None:
    done = bus.gdbus_call(f"{MANAGER}.Arm", "@a{sv} {}")
    assert done.returncode != 0
    match = re.search(r"GDBus\.Error:([\w.]+): (.*)", done.stderr)
    assert match, done.stderr
    assert match.group(1) == "org.kdumpd.Kdump1.Error.NotReserved"
    assert "crashkernel=" in match.group(2)
    assert bus.prop("Armed") is False
    assert bus.prop("CrashkernelReserved") == 0
    codes = [code for code, _ in bus.prop("Problems")]
    assert "load-failed" in codes
    # The daemon is still there and answers.
    assert bus.gdbus_call(f"{MANAGER}.Describe").returncode == 0
