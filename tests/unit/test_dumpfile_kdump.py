"""kdump-compressed writer and reader on synthetic sources: every codec, zero sharing, raw
fallback, flattened output, write failures, and what the reader refuses."""

from __future__ import annotations

import errno
import io
import os
import struct
from pathlib import Path

import numpy as np
import pytest
from dumpfile_synth import PAGE, MemSource, selection

from kdumpd.dumpfile.codecs import FLAG_ZSTD, ZstdCodec
from kdumpd.dumpfile.flat import FlatFormatError, FlatSink, reassemble
from kdumpd.dumpfile.kdump_format import (
    DESC_DTYPE,
    STATUS_INCOMPLETE,
    DiskDumpHeader,
    KdumpFormatError,
    Layout,
    SubHeader,
    Utsname,
)
from kdumpd.dumpfile.kdump_reader import KdumpSource
from kdumpd.dumpfile.pipeline import CaptureOptions, Selection, capture_elf, capture_kdump
from kdumpd.dumpfile.progress import Progress
from kdumpd.dumpfile.sink import DumpWriteError, FileSink

QUIET = Progress(None, "test")


def _source() -> MemSource:
    present = [*range(1, 40), *range(100, 700), 1000]
    return MemSource(present, 1003, zero=set(range(120, 160)) | {5}, random={7, 300, 301})


def _write(src: MemSource, path: Path, **opts: object) -> None:
    options = CaptureOptions(batch_pages=37, **opts)  # type: ignore[arg-type]
    sink = FileSink.create(str(path))
    try:
        capture_kdump(src, selection(src, level=options.dump_level), sink, options, QUIET)
    finally:
        sink.close()


@pytest.mark.parametrize("compression", ["zstd", "zlib", "lzo", "none"])
@pytest.mark.parametrize("level", [0, 1])
def test_every_page_reads_back(tmp_path: Path, compression: str, level: int) -> None:
    src = _source()
    path = tmp_path / "dump"
    _write(src, path, compression=compression, dump_level=level)
    with KdumpSource(str(path)) as dump:
        assert not dump.header.incomplete
        assert dump.max_mapnr == 1003
        assert dump.header.utsname.release == "6.1.0-synth"
        assert dump.header.crash_time == 1700000000
        assert dump.header.nr_cpus == 2
        assert dump.vmcoreinfo_raw == src.vmcoreinfo_raw
        assert np.array_equal(dump.present_bitmap(), src.present_bitmap())
        for start in (0, 30, 95, 650, 999):
            assert dump.read_pages(start, 60) == src.read_pages(start, 60)
        raw = path.read_bytes()
        lay = dump.layout
        descs = np.frombuffer(raw, DESC_DTYPE, count=len(src.present), offset=lay.desc_offset)
    if level & 1:  # one stored zero page, shared by every zero page's descriptor
        zero_descs = descs[descs["offset"] == lay.data_offset(len(src.present))]
        assert len(zero_descs) == 41
    # random pages do not compress: stored raw, flag 0, full page size
    if compression != "none":
        raw_descs = descs[descs["flags"] == 0]
        assert len(raw_descs) >= 3 and set(raw_descs["size"].tolist()) == {PAGE}


def test_header_fields_match_the_format(tmp_path: Path) -> None:
    src = _source()
    path = tmp_path / "dump"
    _write(src, path, compression="zstd", dump_level=31)
    raw = path.read_bytes()
    assert raw[:8] == b"KDUMP   "
    version, status, block_size, sub_blocks, bitmap_blocks, mapnr = (
        struct.unpack_from("<i", raw, 8)[0],
        *struct.unpack_from("<IiiII", raw, 424),
    )
    assert (version, status, block_size) == (6, FLAG_ZSTD, PAGE)
    assert raw[416:424] == bytes(8)  # tv_usec stays 0 (libkdumpfile probes the 32-bit layout)
    assert sub_blocks == 1 and bitmap_blocks == 2 and mapnr == 1003
    sub = SubHeader.unpack(raw[PAGE : PAGE + 104])
    assert sub.dump_level == 31 and sub.max_mapnr_64 == 1003
    assert sub.offset_note == PAGE + 104 and sub.size_note == len(src.notes)
    vi = raw[sub.offset_vmcoreinfo : sub.offset_vmcoreinfo + sub.size_vmcoreinfo]
    assert vi == src.vmcoreinfo_raw


def test_layout_of_the_fixture_dump() -> None:
    lay = Layout(4096, 163_802, 0xFC4)  # makedumpfile's -d 31 file of the fixture
    assert (lay.sub_hdr_blocks, lay.bitmap_blocks) == (2, 10)
    assert lay.bitmap1_offset == 3 * 4096 and lay.desc_offset == 13 * 4096


def test_header_round_trip_and_u32_saturation() -> None:
    uts = Utsname(nodename="n" * 80, release="6.1", version="#1", machine="x86_64")
    hdr = DiskDumpHeader(uts, 4096, 2, 10, 1 << 33, 4, FLAG_ZSTD, crash_time=5)
    raw = hdr.pack()
    assert len(raw) == 464 and struct.unpack_from("<I", raw, 440)[0] == 0xFFFFFFFF
    back = DiskDumpHeader.unpack(raw, max_mapnr_64=1 << 33)
    assert back == DiskDumpHeader(
        Utsname(nodename="n" * 64, release="6.1", version="#1"),
        4096,
        2,
        10,
        1 << 33,
        4,
        FLAG_ZSTD,
        crash_time=5,
    )
    assert raw[12 + 65 + 64] == 0  # byte 64 of every utsname field is NUL


def test_flattened_output_rebuilds_to_the_direct_file(tmp_path: Path) -> None:
    src = _source()
    direct = tmp_path / "direct"
    _write(src, direct, compression="zstd", dump_level=31)
    r, w = os.pipe()
    options = CaptureOptions(batch_pages=37)
    stream = io.BytesIO()
    with os.fdopen(r, "rb") as reader:
        import threading

        t = threading.Thread(target=lambda: stream.write(reader.read()))
        t.start()
        try:
            capture_kdump(src, selection(src, level=31), FlatSink(w), options, QUIET)
        finally:
            os.close(w)
        t.join()
    data = stream.getvalue()
    assert data.endswith(b"\xff" * 16)
    out = tmp_path / "rebuilt"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        reassemble(io.BytesIO(data), fd, str(out))
    finally:
        os.close(fd)
    assert out.read_bytes() == direct.read_bytes()
    # cut short: what was rebuilt says it is incomplete
    fd = os.open(tmp_path / "cut", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with pytest.raises(FlatFormatError, match="incomplete"):
            reassemble(io.BytesIO(data[:-16]), fd, "cut")
    finally:
        os.close(fd)
    assert DiskDumpHeader.unpack((tmp_path / "cut").read_bytes()).incomplete


class _FailingSink(FileSink):
    """A file that runs out of space at the ``fail_at``-th write after the bitmaps."""

    def __init__(self, fd: int, name: str, fail_at: int) -> None:
        super().__init__(fd, name)
        self.left = fail_at

    def write_at(self, offset: int, *parts: bytes | bytearray | memoryview) -> None:
        if offset > 3 * PAGE:
            self.left -= 1
            if self.left == 0:
                raise DumpWriteError(self.name, OSError(errno.ENOSPC, "No space left on device"))
        super().write_at(offset, *parts)


def test_disk_full_leaves_a_dump_marked_incomplete_with_lost_pages(tmp_path: Path) -> None:
    src = _source()
    path = tmp_path / "dump"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    sink = _FailingSink(fd, str(path), fail_at=5)  # the data of the third batch
    try:
        with pytest.raises(DumpWriteError, match="no space left on device"):
            capture_kdump(src, selection(src), sink, CaptureOptions(batch_pages=37), QUIET)
    finally:
        sink.close()
    with KdumpSource(str(path)) as dump:
        assert dump.header.status == FLAG_ZSTD | STATUS_INCOMPLETE
        # pages written before the failure read back; later ones are lost (zero descriptors)
        assert dump.read_pages(1, 20) == src.read_pages(1, 20)
        assert dump.read_pages(600, 10) == bytes(10 * PAGE)
        # re-filtering what is left gives a dump that says it is incomplete too
        copy = tmp_path / "copy"
        sel = Selection(dump.ram_bitmap(), dump.present_bitmap(), dump.max_mapnr, 0, 0)
        out = FileSink.create(str(copy))
        try:
            capture_kdump(dump, sel, out, CaptureOptions(), QUIET)
        finally:
            out.close()
    with KdumpSource(str(copy)) as again:
        assert again.header.incomplete
        assert again.read_pages(1, 20) == src.read_pages(1, 20)


def test_zstd_without_the_batch_api_gives_the_same_pages() -> None:
    pages = [_source().read_pages(p, 1) for p in (1, 7, 120, 300, 400)]
    batch = ZstdCodec()
    single = ZstdCodec()
    single._batch_api = False  # as with the CFFI backend of python-zstandard
    for a, b, page in zip(batch.compress(pages), single.compress(pages), pages, strict=True):
        assert batch.decompress(bytes(a), PAGE) == page == single.decompress(bytes(b), PAGE)


@pytest.mark.parametrize("name", ["zstd", "zlib", "lzo"])
def test_threads_do_not_change_the_output(tmp_path: Path, name: str) -> None:
    src = _source()
    _write(src, tmp_path / "one", compression=name, threads=1)
    _write(src, tmp_path / "three", compression=name, threads=3)
    assert (tmp_path / "one").read_bytes() == (tmp_path / "three").read_bytes()


def test_reader_rejects_garbage_truncation_and_streams(tmp_path: Path) -> None:
    src = _source()
    good = tmp_path / "dump"
    _write(src, good, compression="zstd", dump_level=31)
    data = good.read_bytes()
    cases = {
        "garbage": (os.urandom(8192), "signature"),
        "truncated": (data[: 3 * PAGE + 100], "truncated"),
        "flat": (b"makedumpfile\0\0\0\0" + bytes(5000), "flattened"),
        "badblock": (data[:428] + struct.pack("<i", 3000) + data[432:], "block_size"),
    }
    for name, (content, message) in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(KdumpFormatError, match=message):
            KdumpSource(str(p))


def test_elf_output_cut_short_is_flagged_in_e_flags(tmp_path: Path) -> None:
    src = _source()
    path = tmp_path / "core"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    sink = _FailingSink(fd, str(path), fail_at=3)
    options = CaptureOptions(elf=True, dump_level=31, batch_pages=37)
    try:
        with pytest.raises(DumpWriteError):
            capture_elf(src, selection(src, level=31), sink, options, QUIET, QUIET)
    finally:
        sink.close()
    assert struct.unpack_from("<I", path.read_bytes(), 48)[0] == 1  # e_flags: incomplete
