"""Page counts of a dump without writing it (``--dry-run --show-stats``).

The classifier counts what it excludes by struct page; zero pages need the page contents, and
makedumpfile counts them among the pages still dumpable after the classifier, as the writer meets
them. A writer counts them on the data it reads anyway (:func:`~kdumpd.vmcore.classify.zero_pages`);
without a writer, :func:`count_zero_pages` reads the dumpable pages once for that alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from kdumpd.vmcore.classify import Chunk, Classifier, PageCounts, zero_pages
from kdumpd.vmcore.pagerules import DL_ZERO
from kdumpd.vmcore.source import DumpSource

READ_PAGES = 256  # 1 MiB per read with 4 KiB pages


def count_zero_pages(source: DumpSource, chunks: Iterable[Chunk]) -> int:
    """Zero pages among the dumpable pages of ``chunks``."""
    total = 0
    for chunk in chunks:
        edges = np.diff(chunk.dumpable.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        starts = np.flatnonzero(edges == 1).tolist()
        ends = np.flatnonzero(edges == -1).tolist()
        for lo, hi in zip(starts, ends, strict=True):
            for pos in range(lo, hi, READ_PAGES):
                count = min(READ_PAGES, hi - pos)
                data = source.read_pages(chunk.start_pfn + pos, count)
                total += int(zero_pages(data, source.page_size).sum())
    return total


def dry_run_counts(cls: Classifier) -> PageCounts:
    """All of makedumpfile's counters for the classifier's level, zero pages included."""
    if cls.level & DL_ZERO:
        zero = count_zero_pages(cls.source, cls.chunks())
    else:
        for _ in cls.chunks():
            pass
        zero = 0
    cls.counts.zero = zero
    return cls.counts


def original_pages(source: DumpSource, cls: Classifier) -> int:
    """makedumpfile's "Original pages": per PT_LOAD for an ELF input (kernel text counted
    beside the direct map), else the pages of bitmap 1."""
    return cls.layout.original
