"""An in-memory dump source for the dumpfile unit tests: chosen pages, zero pages, random pages."""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
from vmcore_synth import default_notes

from kdumpd.dumpfile.pipeline import Selection

PAGE = 4096
VMCOREINFO = b"OSRELEASE=6.1.0-synth\nPAGESIZE=4096\nCRASHTIME=1700000000\nNUMBER(phys_base)=0\n"


class MemSource:
    """``max_mapnr`` pfns; ``present`` pfns hold text, zeros or random bytes by pfn."""

    def __init__(self, present: list[int], max_mapnr: int, zero: set[int], random: set[int]):
        self.present = present
        self._max_mapnr = max_mapnr
        self.pages: dict[int, bytes] = {}
        for pfn in present:
            if pfn in zero:
                self.pages[pfn] = bytes(PAGE)
            elif pfn in random:
                self.pages[pfn] = os.urandom(PAGE)
            else:
                self.pages[pfn] = (f"pfn {pfn:#x} " * 1000).encode()[:PAGE]
        self._notes = default_notes(VMCOREINFO)

    page_size = PAGE

    @property
    def max_mapnr(self) -> int:
        return self._max_mapnr

    @property
    def notes(self) -> bytes:
        return self._notes

    @property
    def vmcoreinfo_raw(self) -> bytes | None:
        return VMCOREINFO

    def present_bitmap(self) -> npt.NDArray[np.uint8]:
        bits = np.zeros(self._max_mapnr, dtype=bool)
        bits[self.present] = True
        return np.packbits(bits, bitorder="little")

    def read_pages(self, start_pfn: int, count: int) -> bytes:
        return b"".join(self.pages.get(p, bytes(PAGE)) for p in range(start_pfn, start_pfn + count))

    def read_phys(self, paddr: int, size: int) -> bytes:
        first = paddr // PAGE
        data = self.read_pages(first, -(-(paddr + size) // PAGE) - first)
        return data[paddr - first * PAGE :][:size]


def selection(src: MemSource, keep: list[int] | None = None, level: int = 0) -> Selection:
    bitmap1 = src.present_bitmap()
    if keep is None:
        bitmap2 = bitmap1.copy()
    else:
        bits = np.zeros(src.max_mapnr, dtype=bool)
        bits[keep] = True
        bitmap2 = np.packbits(bits, bitorder="little")
    return Selection(bitmap1, bitmap2, src.max_mapnr, len(src.present), level)
