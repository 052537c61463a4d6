"""Corrupt kdump-compressed files and flattened streams: a one-line KdumpdError, never another
exception, a hang or an allocation sized by a garbage field."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import pytest
from dumpfile_synth import MemSource, selection
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdumpd.dumpfile.flat import FlatSink, reassemble
from kdumpd.dumpfile.kdump_reader import KdumpSource
from kdumpd.dumpfile.pipeline import CaptureOptions, capture_kdump
from kdumpd.dumpfile.progress import Progress
from kdumpd.dumpfile.sink import FileSink
from kdumpd.errors import KdumpdError


@pytest.fixture(scope="module")
def good_dump() -> bytes:
    src = MemSource([*range(1, 30), *range(64, 90)], 100, zero={3, 70}, random={8})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "dump")
        sink = FileSink.create(str(path))
        try:
            capture_kdump(src, selection(src), sink, CaptureOptions(), Progress(None, ""))
        finally:
            sink.close()
        return path.read_bytes()


def _mutate(data: bytes, edits: list[tuple[int, bytes]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        pos %= len(out)
        out[pos : pos + len(value)] = value
    return bytes(out[:cut] if cut is not None else out)


# Header, sub header, the bitmaps and the descriptors are where a wrong byte does harm.
_edit = st.tuples(
    st.one_of(st.integers(0, 600), st.integers(4096, 4300), st.integers(8192, 20000)),
    st.binary(min_size=1, max_size=8),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_edit, max_size=6), st.one_of(st.none(), st.integers(0, 40000)))
def test_corrupt_kdump_files_fail_cleanly(
    good_dump: bytes, edits: list[tuple[int, bytes]], cut: int | None
) -> None:
    fd = os.memfd_create("dump")
    try:
        os.write(fd, _mutate(good_dump, edits, cut))
        path = f"/proc/self/fd/{fd}"
        try:
            with KdumpSource(path) as dump:
                for start in range(0, dump.max_mapnr, 64):
                    dump.read_pages(start, min(64, dump.max_mapnr - start))
        except KdumpdError as exc:
            assert "\n" not in str(exc)
    finally:
        os.close(fd)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(st.tuples(st.integers(0, 3000), st.binary(min_size=1, max_size=8)), max_size=6),
    st.one_of(st.none(), st.integers(0, 12000)),
)
def test_corrupt_flattened_streams_fail_cleanly(
    good_dump: bytes, edits: list[tuple[int, bytes]], cut: int | None
) -> None:
    stream_fd = os.memfd_create("stream")
    sink = FlatSink(stream_fd)
    sink.write_at(0, good_dump[:5000])
    sink.write_at(5000, good_dump[5000:])
    sink.finish()
    stream = os.pread(stream_fd, 1 << 20, 0)
    os.close(stream_fd)
    # edits land in the framing (header and record headers), not only in the payload
    stream = _mutate(
        stream, [(p if p < 4200 else 4096 + 16 + 5000 + p % 16, v) for p, v in edits], cut
    )
    out = os.memfd_create("out")
    try:
        try:
            reassemble(io.BytesIO(stream), out, "out")
        except KdumpdError as exc:
            assert "\n" not in str(exc)
        assert os.fstat(out).st_size < 1 << 40
    finally:
        os.close(out)


def test_zstd_frame_claiming_a_huge_size_is_refused() -> None:
    import zstandard

    from kdumpd.dumpfile.codecs import CodecError, ZstdCodec

    frame = bytearray(zstandard.ZstdCompressor(level=1).compress(b"a" * 4096))
    assert frame[4] == 0x60  # single segment, 2-byte content size
    huge = bytes(frame[:4]) + b"\xe0" + (1 << 40).to_bytes(8, "little") + bytes(frame[7:])
    assert zstandard.frame_content_size(huge) == 1 << 40
    with pytest.raises(CodecError, match="claims"):
        ZstdCodec().decompress(huge, 4096)
