"""Space decisions: the reserve, the dump size bound, the budget sink, retention."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kdumpd.dumpfile.flat import FlatSink
from kdumpd.dumpfile.sink import DumpWriteError, FileSink
from kdumpd.savecore import space
from kdumpd.savecore.targets import BudgetSink

MIB = 1 << 20


@pytest.mark.parametrize(
    ("fs_size", "reserve"),
    [(20 * MIB, 16 * MIB), (10_000 * MIB, 200 * MIB), (10**13, 1024 * MIB)],
)
def test_reserve_is_2_percent_between_16_mib_and_1_gib(fs_size: int, reserve: int) -> None:
    assert space.reserve_for(fs_size) == reserve


def test_estimate_is_an_upper_bound_of_a_kdump_file() -> None:
    # 1000 kept pages of 4 KiB out of 1 GiB of RAM (262144 pfns, 32 KiB per bitmap)
    est = space.estimate_dump_size(1000, 262144, 4096)
    assert est == 2 * 4096 + 64 * 1024 + 2 * 32768 + 1000 * (24 + 4096)


def test_plan_never_hands_out_the_reserve() -> None:
    plan = space.plan_space(free=100 * MIB, fs_size=1000 * MIB, estimate=90 * MIB)
    assert plan.reserve == 20 * MIB and plan.budget == 80 * MIB and not plan.fits
    assert space.plan_space(free=5 * MIB, fs_size=100 * MIB, estimate=1).budget == 0


def test_budget_sink_stops_at_the_budget_but_lets_the_header_be_rewritten(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "dump", os.O_RDWR | os.O_CREAT, 0o600)
    sink = BudgetSink(FileSink(fd, "dump"), budget=10)
    sink.write_at(0, b"12345", b"678")
    with pytest.raises(DumpWriteError, match="space budget of 10 bytes"):
        sink.write_at(8, b"abc")
    sink.write_at(0, b"HEAD")  # the writer's abort marks the header incomplete: still allowed
    os.close(fd)
    assert (tmp_path / "dump").read_bytes() == b"HEAD5678"


def test_budget_of_a_stream_counts_every_byte_sent(tmp_path: Path) -> None:
    # A flattened stream lands on the remote disk as sent: header, record headers, rewrites.
    fd = os.open(tmp_path / "stream", os.O_RDWR | os.O_CREAT, 0o600)
    budget = 4096 + 2 * (16 + 100) + 16
    sink = BudgetSink(FlatSink(fd, "ssh"), budget)
    sink.write_at(0, b"x" * 100)
    sink.write_at(0, b"y" * 100)  # the same offset again still costs stream bytes
    with pytest.raises(DumpWriteError, match=f"space budget of {budget} bytes"):
        sink.write_at(200, b"z")
    sink.finish()
    os.close(fd)
    assert (tmp_path / "stream").stat().st_size == budget


def test_retention_keeps_the_newest_and_never_touches_other_directories(tmp_path: Path) -> None:
    for name in (
        "202601010000",
        "202602010000",
        "10.0.0.1-202603010000",
        "202604010000",
        "lost+found",
        "notes",
    ):
        (tmp_path / name).mkdir()
    (tmp_path / "202605010000").write_text("a file, not a dump")
    doomed = space.expired_dumps(tmp_path, keep=2, current="202604010000")
    assert [p.name for p in doomed] == ["202601010000", "202602010000"]
    assert space.apply_retention(tmp_path, 2, "202604010000") == []
    assert sorted(os.listdir(tmp_path)) == [
        "10.0.0.1-202603010000",
        "202604010000",
        "202605010000",
        "lost+found",
        "notes",
    ]
    assert space.expired_dumps(tmp_path, keep=0, current="202604010000") == []
