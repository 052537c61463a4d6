"""Sorted, disjoint ``[start_pfn, end_pfn)`` ranges: the set algebra behind the pfn layout."""

from __future__ import annotations

import bisect

import numpy as np
import numpy.typing as npt

Ranges = list[tuple[int, int]]


def merge(ranges: Ranges) -> Ranges:
    """The union of ``ranges``, sorted and disjoint: empty ones dropped, touching ones joined."""
    out: Ranges = []
    for lo, hi in sorted(ranges):
        if lo >= hi:
            continue
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(hi, out[-1][1]))
        else:
            out.append((lo, hi))
    return out


def subtract(ranges: Ranges, holes: Ranges) -> Ranges:
    """``ranges`` minus ``holes`` (both sorted and disjoint), in one linear sweep."""
    out: Ranges = []
    j = 0
    for lo, hi in ranges:
        while j < len(holes) and holes[j][1] <= lo:
            j += 1
        cur, k = lo, j
        while k < len(holes) and holes[k][0] < hi:
            if holes[k][0] > cur:
                out.append((cur, holes[k][0]))
            cur = max(cur, holes[k][1])
            k += 1
        if cur < hi:
            out.append((cur, hi))
    return out


def mask(ranges: Ranges, lo: int, hi: int) -> npt.NDArray[np.bool_]:
    """Membership of pfns ``[lo, hi)`` in ``ranges`` as a bool array."""
    out = np.zeros(hi - lo, dtype=bool)
    i = max(bisect.bisect_right(ranges, (lo, lo)) - 1, 0)
    while i < len(ranges) and ranges[i][0] < hi:
        a, b = max(ranges[i][0], lo), min(ranges[i][1], hi)
        if a < b:
            out[a - lo : b - lo] = True
        i += 1
    return out


def bitmap_ranges(bitmap: npt.NDArray[np.uint8], window_bytes: int = 1 << 17) -> Ranges:
    """Runs of set bits of a packed little-endian bitmap, expanded a window at a time."""
    out: Ranges = []
    for start in range(0, len(bitmap), window_bytes):
        bits = np.unpackbits(bitmap[start : start + window_bytes], bitorder="little")
        edges = np.diff(bits.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
        base = start * 8
        for lo, hi in zip(
            np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True
        ):
            out.append((base + lo, base + hi))
    return merge(out)
