"""Walking a pfn bitmap in bounded pieces: runs of set bits, batches of pages, bit counts.

Bitmaps use makedumpfile's bit order (bit i of byte j = pfn 8j+i).  Nothing here expands a whole
bitmap at once: a 16 TiB machine has 4 Gi pfns, so every walk goes window by window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final

import numpy as np
import numpy.typing as npt

Bitmap = npt.NDArray[np.uint8]
# Bitmap bytes expanded per step (128 Ki pfns = 512 MiB of RAM): the temporaries of one step
# (one byte per pfn, a few times over) stay well under 1 MiB whatever the machine's size.
_WINDOW_BYTES: Final = 1 << 14


def iter_runs(bitmap: Bitmap, window_bytes: int = _WINDOW_BYTES) -> Iterator[tuple[int, int]]:
    """Maximal runs ``(start_pfn, count)`` of set bits, in pfn order."""
    open_start: int | None = None
    for lo in range(0, len(bitmap), window_bytes):
        bits = np.unpackbits(bitmap[lo : lo + window_bytes], bitorder="little")
        base = lo * 8
        prev = np.int8(0 if open_start is None else 1)
        edges = np.diff(bits.astype(np.int8), prepend=prev)
        starts = (np.flatnonzero(edges == 1) + base).tolist()
        ends = (np.flatnonzero(edges == -1) + base).tolist()
        if open_start is not None:
            starts.insert(0, open_start)
        for start, end in zip(starts, ends, strict=False):
            yield start, end - start
        open_start = starts[-1] if len(starts) > len(ends) else None
    if open_start is not None:
        yield open_start, len(bitmap) * 8 - open_start


def iter_batches(
    runs: Iterable[tuple[int, int]], batch_pages: int
) -> Iterator[list[tuple[int, int]]]:
    """Group runs into batches of at most ``batch_pages`` pages, splitting long runs."""
    batch: list[tuple[int, int]] = []
    room = batch_pages
    for start, count in runs:
        while count:
            take = min(count, room)
            batch.append((start, take))
            start += take
            count -= take
            room -= take
            if room == 0:
                yield batch
                batch, room = [], batch_pages
    if batch:
        yield batch


def popcount(bitmap: Bitmap) -> int:
    total = 0
    for lo in range(0, len(bitmap), _WINDOW_BYTES):
        total += int(np.unpackbits(bitmap[lo : lo + _WINDOW_BYTES]).sum(dtype=np.int64))
    return total


def clear_bits(bitmap: Bitmap, pfns: npt.NDArray[np.int64]) -> None:
    """Clear the bits of ``pfns`` (in place)."""
    if len(pfns) == 0:
        return
    masks = np.left_shift(np.uint8(1), (pfns & 7).astype(np.uint8))
    np.bitwise_and.at(bitmap, pfns >> 3, ~masks)
