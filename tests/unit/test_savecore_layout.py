"""Dump directory layout: stamps, collisions, modes, the commit rename, metadata, status."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from kdumpd.savecore import layout
from kdumpd.savecore.run import panic_message

WHEN = time.mktime((2026, 11, 26, 8, 2, 30, 0, 0, -1))


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_stamp_is_kdump_tools_minute_format() -> None:
    assert layout.stamp_of(WHEN) == "202611260802"
    assert layout.dir_name("202611260802", None) == "202611260802"
    assert layout.dir_name("202611260802", "10.0.2.15") == "10.0.2.15-202611260802"


def test_dump_dir_is_0700_even_under_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path, stamp = layout.create_dump_dir(tmp_path / "crash", WHEN, None)
    finally:
        os.umask(old)
    assert (path.name, stamp) == ("202611260802", "202611260802")
    assert _mode(path) == 0o700


def test_collision_takes_the_next_free_minute(tmp_path: Path) -> None:
    (tmp_path / "202611260802").mkdir()  # a crash earlier in the same minute
    (tmp_path / "202611260803").mkdir()
    path, stamp = layout.create_dump_dir(tmp_path, WHEN, None)
    assert stamp == "202611260804" and path.name == stamp
    host_path, _ = layout.create_dump_dir(tmp_path, WHEN, "host1")
    assert host_path.name == "host1-202611260802"  # other names do not collide


def test_files_are_0600_and_never_reuse_an_existing_file(tmp_path: Path) -> None:
    fd = layout.create_file(tmp_path / "dump-incomplete")
    os.close(fd)
    assert _mode(tmp_path / "dump-incomplete") == 0o600
    with pytest.raises(layout.LayoutError, match="cannot create"):
        layout.create_file(tmp_path / "dump-incomplete")


def test_write_file_is_atomic_and_private(tmp_path: Path) -> None:
    layout.write_file(tmp_path / "metadata.json", b"one")
    layout.write_file(tmp_path / "metadata.json", b"two")
    assert (tmp_path / "metadata.json").read_bytes() == b"two"
    assert _mode(tmp_path / "metadata.json") == 0o600
    assert sorted(os.listdir(tmp_path)) == ["metadata.json"]  # no temporary left behind


def test_commit_renames_the_incomplete_dump(tmp_path: Path) -> None:
    os.close(layout.create_file(tmp_path / layout.INCOMPLETE_NAME))
    done = layout.commit_dump(tmp_path, "202611260802")
    assert done == tmp_path / "dump.202611260802"
    assert sorted(os.listdir(tmp_path)) == ["dump.202611260802"]
    with pytest.raises(layout.LayoutError, match="cannot commit"):
        layout.commit_dump(tmp_path, "202611260802")  # nothing left to commit


@pytest.mark.parametrize(
    ("committed", "started", "dmesg", "status"),
    [
        (True, True, True, "complete"),
        (False, True, True, "incomplete"),
        (False, False, True, "dmesg-only"),
        (False, False, False, "incomplete"),
    ],
)
def test_final_status(committed: bool, started: bool, dmesg: bool, status: str) -> None:
    assert layout.final_status(committed, started, dmesg) == status


def test_metadata_json_has_the_documented_keys() -> None:
    meta = layout.Metadata(id="202611260802", target="local", kernel_release="6.1.0-56-amd64")
    meta.durations["dump"] = 1.23456
    doc = json.loads(meta.to_json())
    assert doc["schema"] == layout.METADATA_SCHEMA
    assert doc["status"] == "incomplete" and doc["in_progress"] is True
    assert doc["durations"] == {"dump": 1.235}
    documented = {
        *("id", "kernel_release", "crash_time", "timestamp_us", "panic_message", "dump_level"),
        *("format", "compression", "target", "files", "sizes", "pages", "durations"),
        *("peak_rss_bytes", "errors"),
    }
    assert documented <= doc.keys()


def test_panic_message_takes_the_last_panic_line() -> None:
    log = (
        b"[    1.0] hello\n"
        b"[    4.4] Kernel panic - not syncing: first\n"
        b"[    5.5] Kernel panic - not syncing: sysrq triggered crash\n"
        b"[    5.6] Kernel Offset: disabled\n"
    )
    assert panic_message(log) == "sysrq triggered crash"
    assert panic_message(b"no panic here\n") is None
