"""Fixtures of the capture-side tests: a machine root holding a vmcore, and a real sshd."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .sshd import SshServer


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[SshServer]:
    server = SshServer(tmp_path / "sshd")
    server.base.mkdir()
    server.start()
    yield server
    server.stop()


def machine_root(base: Path, vmcore: Path, config: str) -> Path:
    """A --root tree of a capture kernel: /proc/vmcore (the real fixture), uptime and config."""
    root = base / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/vmcore").symlink_to(vmcore)
    (root / "proc/uptime").write_text("7.25 1.00\n")
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/kdump-tools").write_text(config)
    return root
