"""Fixtures for the D-Bus service tests: one private bus (with polkitd) per module, and kdumpd
running on a fake machine built by the foundation's ``tests/unit/machines.py``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from busenv import Bus, _stop, start_bus, start_kdumpd
from machines import Machine, build_machine


@pytest.fixture(scope="module")
def bus() -> Iterator[Bus]:
    b = start_bus()
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(b.directory, ignore_errors=True)


@pytest.fixture(scope="module")
def machine() -> Iterator[Machine]:
    """Ready to arm: 320M reserved, capture kernel not loaded yet."""
    root = Path(tempfile.mkdtemp(prefix="kdumpd-machine-"))
    m = build_machine(root, loaded=False)
    m.write("/proc/sys/kernel/random/boot_id", "11111111-2222-3333-4444-555555555555\n")
    m.write("/proc/sysrq-trigger", "")
    m.write("/proc/sys/kernel/panic_on_oops", "0\n")
    try:
        yield m
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def kdumpd(bus: Bus, machine: Machine) -> Iterator[subprocess.Popen[Any]]:
    proc = start_kdumpd(bus, machine.root)
    try:
        yield proc
    finally:
        _stop(proc)
