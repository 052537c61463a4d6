"""Pure parts of the capture engine: bitmap walks, ELF segment planning, the flattened framing,
the progress line and the page report."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import given, settings
from hypothesis import strategies as st

from kdumpd.dumpfile.elf import PFN_EXCLUDED, ElfWriter, OutSegment, Segment, plan_segments
from kdumpd.dumpfile.flat import FlatFormatError, FlatSink, flat_header, reassemble
from kdumpd.dumpfile.pages import clear_bits, iter_batches, iter_runs, popcount
from kdumpd.dumpfile.progress import Progress, format_eta, format_line
from kdumpd.dumpfile.report import PageStats, format_report
from kdumpd.dumpfile.sink import NullSink
from kdumpd.vmcore.classify import zero_pages

PAGE = 4096


def _runs_naive(bits: list[bool]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i, bit in enumerate(bits):
        if bit and runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        elif bit:
            runs.append((i, 1))
    return runs


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.booleans(), min_size=1, max_size=600),
    st.integers(1, 40),
    st.integers(1, 50),
)
def test_runs_batches_and_counts_match_a_naive_walk(
    bits: list[bool], window: int, batch: int
) -> None:
    bitmap = np.packbits(np.array(bits, dtype=bool), bitorder="little")
    runs = list(iter_runs(bitmap, window_bytes=window))
    assert runs == _runs_naive(bits)
    assert popcount(bitmap) == sum(bits)
    batches = list(iter_batches(runs, batch))
    assert all(sum(n for _, n in b) <= batch for b in batches)
    assert [p for b in batches for s, n in b for p in range(s, s + n)] == [
        i for i, b in enumerate(bits) if b
    ]


def test_clear_bits_and_zero_pages() -> None:
    bitmap = np.full(4, 0xFF, dtype=np.uint8)
    clear_bits(bitmap, np.array([0, 9, 31], dtype=np.int64))
    assert np.unpackbits(bitmap, bitorder="little").tolist() == (
        [0] + [1] * 8 + [0] + [1] * 21 + [0]
    )
    pages = np.zeros(3 * PAGE, dtype=np.uint8)
    pages[PAGE + 4095] = 1
    assert zero_pages(pages, PAGE).tolist() == [True, False, True]


def _bitmap(pfns: list[int], n: int) -> np.ndarray:
    bits = np.zeros(n, dtype=bool)
    bits[pfns] = True
    return np.packbits(bits, bitorder="little")


def test_plan_splits_only_at_long_excluded_runs() -> None:
    kept = [*range(0, 10), *range(100, 110), *range(400, 410)]
    load = Segment(paddr=0, vaddr=0xFFFF888000000000, memsz=600 * PAGE)
    segs = plan_segments([load], _bitmap(kept, 600), PAGE)
    # the 90-page gap is written; the 290-page gap ends a segment and stays as p_memsz only
    assert segs == [
        OutSegment(0, load.vaddr, 110 * PAGE, 400 * PAGE),
        OutSegment(400 * PAGE, load.vaddr + 400 * PAGE, 10 * PAGE, 200 * PAGE),
    ]
    assert PFN_EXCLUDED == 256


def test_plan_keeps_unaligned_ends_and_empty_loads() -> None:
    load = Segment(paddr=0x1800, vaddr=0x1800, memsz=10 * PAGE)
    segs = plan_segments([load], _bitmap([1, 2, 3], 16), PAGE)
    assert segs == [OutSegment(0x1800, 0x1800, 3 * PAGE - 0x800, 10 * PAGE)]
    empty = plan_segments([Segment(0, 0, 300 * PAGE)], _bitmap([], 300), PAGE)
    assert empty == [OutSegment(0, 0, 0, 300 * PAGE)]
    leading = plan_segments([Segment(0, 0, 600 * PAGE)], _bitmap([300, 301], 600), PAGE)
    assert leading[0] == OutSegment(0, 0, 0, 300 * PAGE)  # a long leading run: no data


def test_elf_headers_use_extended_numbering(tmp_path: Path) -> None:
    segs = [OutSegment(i * PAGE, i * PAGE, 0, PAGE) for i in range(70_000)]
    writer = ElfWriter(NullSink(), b"", segs, PAGE)
    path = tmp_path / "core"
    path.write_bytes(writer.headers(incomplete=True))
    with path.open("rb") as f:
        elf = ELFFile(f)
        assert elf.header.e_phnum == 0xFFFF and elf.header.e_flags == 1
        assert elf.num_segments() == 70_001
        assert elf.get_segment(0).header.p_type == "PT_NOTE"
        assert elf.get_segment(70_000).header.p_paddr == 69_999 * PAGE


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20_000), st.binary(max_size=3000)), max_size=25))
def test_flat_records_rebuild_what_pwrite_would(records: list[tuple[int, bytes]]) -> None:
    out = os.memfd_create("stream")
    sink = FlatSink(out)
    for offset, data in records:
        sink.write_at(offset, data[: len(data) // 2], data[len(data) // 2 :])
    sink.finish()
    stream = os.pread(out, os.fstat(out).st_size, 0)
    os.close(out)
    expected = bytearray()
    for offset, data in records:
        if data:
            expected[len(expected) : offset + len(data)] = bytes(
                max(0, offset + len(data) - len(expected))
            )
            expected[offset : offset + len(data)] = data
    fd = os.memfd_create("rebuilt")
    try:
        reassemble(io.BytesIO(bytes(stream)), fd, "rebuilt")
        size = os.fstat(fd).st_size
        assert os.pread(fd, size + 1, 0) == bytes(expected)
    finally:
        os.close(fd)


def test_reassemble_rejects_bad_streams() -> None:
    fd = os.memfd_create("out")
    try:
        with pytest.raises(FlatFormatError, match="not a flattened dump"):
            reassemble(io.BytesIO(b"KDUMP   " + bytes(5000)), fd, "out")
        zero_record = flat_header() + (5).to_bytes(8, "big") + (0).to_bytes(8, "big")
        with pytest.raises(FlatFormatError, match="bad offset"):
            reassemble(io.BytesIO(zero_record), fd, "out")
        cut = flat_header() + (0).to_bytes(8, "big") + (100).to_bytes(8, "big") + b"x" * 10
        with pytest.raises(FlatFormatError, match="cut short"):
            reassemble(io.BytesIO(cut), fd, "out")
    finally:
        os.close(fd)


def test_eta_formats_like_makedumpfile() -> None:
    assert format_eta(3) == "eta: 3s"
    assert format_eta(125) == "eta: 2m5s"
    assert format_eta(3 * 3600 + 120) == "eta: 3h2m"
    assert format_eta(3 * 86400 + 3600) == "eta: 3d1h"
    assert format_eta(200 * 86400) == "eta: >100day"
    line = format_line("Copying data", 420, 0, 3.0)
    assert line == "Copying data" + " " * 38 + ": [ 42.0 %] /" + "  " + "eta: 4s".rjust(16)


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_progress_is_throttled_and_always_ends_at_100(tty: bool) -> None:
    now = [0.0]
    stream = _Stream(tty)
    progress = Progress(stream, "Copying data", clock=lambda: now[0])
    for done in range(0, 100, 5):
        progress.update(done, 100)
        now[0] += 0.3
    progress.update(100, 100)
    progress.update(100, 100)
    text = stream.getvalue()
    assert text.count("[100.0 %]") == 1
    assert 6 <= text.count("Copying data") <= 8  # once a second, plus the start and the end
    if tty:
        assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    else:
        assert "\r" not in text and text.count("\n") == text.count("Copying data")


def test_report_matches_makedumpfile_layout(shared_fixtures: Path) -> None:
    stats = PageStats(
        original=144_296,
        total=163_802,
        counts={
            "zero": 5853,
            "cache": 18570,
            "cache_private": 2467,
            "user": 24608,
            "free": 61507,
            "hwpoison": 0,
            "offline": 0,
        },
        write_bytes=74065844,
    )
    reference = (shared_fixtures / "vmcore-6.1-kexec.d31.stats.txt").read_text().splitlines()
    assert format_report(stats).splitlines() == reference[1:16]


def test_write_all_resumes_after_short_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    from kdumpd.dumpfile import sink

    real = os.writev

    def short(fd: int, buffers: list[bytes]) -> int:  # at most 7 bytes per call
        return real(fd, [bytes(b"".join(bytes(b) for b in buffers)[:7])])

    monkeypatch.setattr(sink.os, "writev", short)
    parts = [b"abc", b"", memoryview(b"defghijklmnop")[2:], b"q" * 20]
    r, w = os.pipe()
    sink.write_all(w, parts)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert f.read() == b"abc" + b"fghijklmnop" + b"q" * 20
