"""The capture pipeline: dump source → page selection → writer, in bounded batches.

Memory stays flat whatever the input size: pages go through one batch buffer of 1 MiB (a ring of
``threads + 1`` with several threads), bitmaps cost 2 bits per pfn, and output is written as it is
produced.  Batches are compressed on ``threads`` cores at once (see _copy_pages); zero pages are
found with numpy first so they are never compressed.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from kdumpd.dumpfile.codecs import Page, codec_by_name
from kdumpd.dumpfile.elf import ElfWriter, LoadLike, plan_segments, segments_from_bitmap
from kdumpd.dumpfile.kdump import KdumpWriter
from kdumpd.dumpfile.meta import dump_meta
from kdumpd.dumpfile.pages import (
    Bitmap,
    clear_bits,
    iter_batches,
    iter_runs,
    popcount,
)
from kdumpd.dumpfile.progress import Progress
from kdumpd.dumpfile.sink import DumpWriteError, Sink
from kdumpd.vmcore.classify import zero_pages
from kdumpd.vmcore.source import DumpSource

# 1 MiB of pages per batch.  Each batch costs a compressor call that starts its threads and
# contexts anew, plus some numpy calls, so bigger batches cost less; but peak RSS grows by about
# 10 KiB per page of batch (buffers, compressed output, allocator slack): at 512 pages a 1.5 GB
# Debian 13 vmcore peaked at 47 MiB, at 256 pages at 40 MiB.
DEFAULT_BATCH_PAGES: Final = 256


@dataclass(frozen=True)
class CaptureOptions:
    dump_level: int = 31
    compression: str = "zstd"
    elf: bool = False
    threads: int = 1
    batch_pages: int = DEFAULT_BATCH_PAGES


@dataclass
class Selection:
    """Which pfns exist (bitmap 1) and which are kept (bitmap 2), with the classifier's counts.

    ``counts`` uses makedumpfile's report names (cache, cache_private, user, free, hwpoison,
    offline); zero pages are counted while copying.  ``max_mapnr`` is the bitmaps' length in
    bits (clamped to the memory that has struct pages); ``level`` the dump level that could be
    decided, ``warnings`` why it is lower than asked.
    """

    bitmap1: Bitmap
    bitmap2: Bitmap
    max_mapnr: int
    original: int
    level: int
    counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass
class CaptureReport:
    selection: Selection
    pages_written: int = 0
    zero_pages: int = 0
    bytes_written: int = 0
    elf_pages: tuple[int, int] | None = None  # ELF output: pages only in p_memsz, pages in file


def _read_batch(
    source: DumpSource, batch: list[tuple[int, int]], buf: np.ndarray, page_size: int
) -> np.ndarray:
    """Copy the batch's pages into ``buf``: the source may hand out views of an mmap window
    that its next read replaces, so nothing keeps a view past this call."""
    pos = 0
    for start, count in batch:
        size = count * page_size
        view = source.read_pages(start, count)
        buf[pos : pos + size] = np.frombuffer(view, dtype=np.uint8, count=size)
        del view
        pos += size
    return buf[:pos]


def _page_views(buf: np.ndarray, count: int, page_size: int) -> list[memoryview]:
    mv = buf.data
    return [mv[j * page_size : (j + 1) * page_size] for j in range(count)]


def _batch_pfns(batch: list[tuple[int, int]]) -> npt.NDArray[np.int64]:
    return np.concatenate([np.arange(s, s + n, dtype=np.int64) for s, n in batch])


def remove_zero_pages(
    source: DumpSource, bitmap2: Bitmap, options: CaptureOptions, progress: Progress
) -> int:
    """Clear all-zero pages from bitmap 2 (ELF output has no shared zero page); returns count."""
    ps = source.page_size
    buf = np.empty(options.batch_pages * ps, dtype=np.uint8)
    total = popcount(bitmap2)
    done = zeros = 0
    for batch in iter_batches(iter_runs(bitmap2.copy()), options.batch_pages):
        zero = zero_pages(_read_batch(source, batch, buf, ps), ps)
        clear_bits(bitmap2, _batch_pfns(batch)[zero])
        zeros += int(zero.sum())
        done += len(zero)
        progress.update(done, total)
    progress.update(total, total)
    return zeros


def _copy_pages(
    source: DumpSource,
    bitmap2: Bitmap,
    writer: KdumpWriter,
    options: CaptureOptions,
    progress: Progress,
) -> None:
    """Read batch k+1 while ``threads`` long-lived workers compress the batches before it.

    With one thread, each batch is read, compressed and written in turn, in one buffer.

    Compression runs in C without the GIL, one batch per worker, so the cores stay busy while
    this thread reads, checks for zeros and writes, in pfn order, the oldest compressed batch.
    A codec that holds the GIL gets one worker.  Each batch in flight holds one of
    ``workers + 1`` buffers of 1 MiB.
    """
    ps = source.page_size
    total = writer.num_dumpable
    batches = iter_batches(iter_runs(bitmap2), options.batch_pages)
    if options.threads <= 1:
        # One CPU (the capture kernel boots with nr_cpus=1): a worker could not run beside this
        # thread, it would only cost a second buffer and a thread, memory that a small
        # crashkernel reservation lacks.
        buf = np.empty(options.batch_pages * ps, dtype=np.uint8)
        for batch in batches:
            zero = zero_pages(_read_batch(source, batch, buf, ps), ps)
            pages = _page_views(buf, len(zero), ps)
            writer.write_pages(pages, zero, writer.compress_pages(pages, zero))
            progress.update(writer.stats.pages, total)
        progress.update(total, total)
        return
    depth = max(1, options.threads) if writer.codec.concurrent else 1
    bufs = [np.empty(options.batch_pages * ps, dtype=np.uint8) for _ in range(depth + 1)]
    Batch = tuple[list[memoryview], npt.NDArray[np.bool_], Future[Sequence[Page]]]
    in_flight: deque[Batch] = deque()

    def write_oldest() -> None:
        pages, zero, blobs = in_flight.popleft()
        writer.write_pages(pages, zero, blobs.result())
        progress.update(writer.stats.pages, total)

    with ThreadPoolExecutor(max_workers=depth, thread_name_prefix="kdump-compress") as pool:
        for i, batch in enumerate(batches):
            buf = bufs[i % len(bufs)]
            zero = zero_pages(_read_batch(source, batch, buf, ps), ps)
            pages = _page_views(buf, len(zero), ps)
            in_flight.append((pages, zero, pool.submit(writer.compress_pages, pages, zero)))
            if len(in_flight) > depth:
                write_oldest()
        while in_flight:
            write_oldest()
    progress.update(total, total)


def capture_kdump(
    source: DumpSource,
    selection: Selection,
    sink: Sink,
    options: CaptureOptions,
    progress: Progress,
) -> CaptureReport:
    # The pipeline spreads batches over the cores; the codec compresses each on one.
    codec = codec_by_name(options.compression)
    writer = KdumpWriter(
        sink,
        dump_meta(source, selection.max_mapnr),
        codec,
        selection.bitmap1,
        selection.bitmap2,
        options.dump_level,
    )
    report = CaptureReport(selection)
    try:
        writer.start()
        _copy_pages(source, selection.bitmap2, writer, options, progress)
        writer.finish()
    except BaseException:
        _abort(writer.abort)
        raise
    report.pages_written = writer.stats.pages
    report.zero_pages = writer.stats.zero_pages if options.dump_level & 1 else 0
    report.bytes_written = writer.stats.bytes_written
    return report


def capture_elf(
    source: DumpSource,
    selection: Selection,
    sink: Sink,
    options: CaptureOptions,
    progress: Progress,
    zero_progress: Progress,
) -> CaptureReport:
    report = CaptureReport(selection)
    if options.dump_level & 1:
        report.zero_pages = remove_zero_pages(source, selection.bitmap2, options, zero_progress)
    loads: list[LoadLike] = list(
        getattr(source, "loads", None) or segments_from_bitmap(selection.bitmap1, source.page_size)
    )
    writer = ElfWriter(
        sink,
        source.notes,
        plan_segments(loads, selection.bitmap2, source.page_size),
        source.page_size,
    )
    try:
        writer.write(source, progress)
    except BaseException:
        _abort(writer.abort)
        raise
    report.pages_written = popcount(selection.bitmap2)
    report.bytes_written = writer.bytes_written
    ps = source.page_size
    in_file = sum(-(-seg.filesz // ps) for seg in writer.segments)
    in_memory = sum(-(-seg.memsz // ps) for seg in writer.segments)
    report.elf_pages = (in_memory - in_file, in_file)
    return report


def _abort(abort: Callable[[], None]) -> None:
    """Mark the output incomplete; a second write failure must not hide the first error."""
    with contextlib.suppress(DumpWriteError):
        abort()
