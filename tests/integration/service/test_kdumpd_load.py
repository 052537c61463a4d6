"""A light run of bench/bus_load.py: concurrent readers while the state changes; no call may
fail and no connection may be left behind (timings are printed by the bench, never asserted)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
from busenv import REPO, Bus

sys.path.insert(0, str(REPO / "bench"))
from bus_load import run_load

pytestmark = pytest.mark.bus


def test_concurrent_reads_while_arming_never_fail(bus: Bus, kdumpd: Any) -> None:
    result = asyncio.run(run_load(bus.address, clients=10, calls=40))
    assert result.failures == []
    assert result.calls == 400
    assert result.changes > 0
    assert result.leaked <= 0
    assert kdumpd.poll() is None
