"""The file sink keeps what it wrote out of the page cache, and still writes every byte."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdumpd.dumpfile.sink import FileSink
from kdumpd.dumpfile.writeback import WritebackPacer

MIB = 1 << 20


@pytest.fixture
def disk_dir() -> Iterator[Path]:
    # /var/tmp rather than pytest's tmp_path: the page cache is only dropped on a disk file
    # system, and /tmp may be a tmpfs.
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="kdumpd-writeback-") as d:
        yield Path(d)


def _resident_bytes(path: Path) -> int:
    out = subprocess.run(
        ["fincore", "--bytes", "--noheadings", "--output", "RES", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return int(out.split()[0])


def test_written_stretches_leave_the_page_cache(disk_dir: Path) -> None:
    path = disk_dir / "dump"
    sink = FileSink.create(str(path))
    sink.pacer = WritebackPacer(sink.fd, every=1 * MIB)
    digest = hashlib.sha256()
    block = os.urandom(256 << 10)
    # Two places written alternately, like the kdump writer's descriptor table and page data.
    for i in range(64):
        sink.write_at(i * 4096, block[:4096])
        sink.write_at(MIB + i * len(block), block)
    sink.finish()
    resident = _resident_bytes(path)
    sink.close()
    size = MIB + 64 * len(block)
    assert path.stat().st_size == size
    # At most the stretch since the last flush and the one being written back stay cached.
    assert resident <= 3 * MIB, f"{resident} of {size} bytes still cached"
    with path.open("rb") as f:
        data = f.read()
    for i in range(64):
        assert data[i * 4096 : (i + 1) * 4096] == block[:4096]
    digest.update(data[MIB:])
    assert digest.digest() == hashlib.sha256(block * 64).digest()


def test_a_character_device_turns_the_pacer_off_quietly() -> None:
    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        sink = FileSink(fd, "/dev/null")
        sink.pacer = WritebackPacer(fd, every=4096)
        sink.write_at(0, b"x" * 8192)
        sink.write_at(8192, b"y" * 8192)
        sink.finish()
    finally:
        os.close(fd)
