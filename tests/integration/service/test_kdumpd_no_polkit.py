"""Without polkit on the bus: root may still change things, every other user is refused."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from busenv import MANAGER, Bus, start_bus

pytestmark = pytest.mark.bus


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    b = start_bus(polkit=False)
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(b.directory, ignore_errors=True)


def test_without_polkit_only_root_may_change(bus: Bus, kdumpd: Any) -> None:
    assert not bus.name_owner("org.freedesktop.PolicyKit1")
    for user in ("nobody", "daemon"):
        done = bus.gdbus_call(f"{MANAGER}.Arm", "@a{sv} {}", user=user)
        match = re.search(r"GDBus\.Error:([\w.]+): (.*)", done.stderr)
        assert match, done.stderr
        assert match.group(1) == "org.kdumpd.Kdump1.Error.NotAuthorized"
        assert "polkit is not running" in match.group(2)
    assert bus.prop("Armed") is False
    assert bus.gdbus_call(f"{MANAGER}.Arm", "@a{sv} {}").returncode == 0
    assert bus.prop("Armed") is True


def test_propagate_key_without_ssh_target_is_invalid_config(bus: Bus, kdumpd: Any) -> None:
    done = bus.gdbus_call(f"{MANAGER}.PropagateKey")
    assert "org.kdumpd.Kdump1.Error.InvalidConfig" in done.stderr
    assert "SSH is not set" in done.stderr
