"""What every dump input offers the classifier and the writers.

Two inputs implement it: an ELF vmcore (``/proc/vmcore``, a copy of it, or QEMU's
``dump-guest-memory`` output) and a kdump-compressed file being re-filtered.  Writers and the page
classifier depend only on this protocol, never on how the input is stored.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import numpy.typing as npt


class DumpSource(Protocol):
    """Physical memory of a crashed kernel plus the notes that describe it."""

    @property
    def page_size(self) -> int:
        """Bytes per page (VMCOREINFO PAGESIZE, 4096 on x86_64)."""
        ...

    @property
    def max_mapnr(self) -> int:
        """One more than the highest pfn present: the length of both bitmaps."""
        ...

    @property
    def notes(self) -> bytes:
        """The raw ELF note data (NT_PRSTATUS per CPU, VMCOREINFO, …) as stored in the input."""
        ...

    @property
    def vmcoreinfo_raw(self) -> bytes | None:
        """The VMCOREINFO note's text, None when the input has none."""
        ...

    def present_bitmap(self) -> npt.NDArray[np.uint8]:
        """Bitmap 1: one bit per pfn (bit i of byte j = pfn 8j+i), set where the input has it."""
        ...

    def read_pages(self, start_pfn: int, count: int) -> bytes | memoryview:
        """``count`` consecutive pages from ``start_pfn``; parts the input lacks read as zeros."""
        ...

    def read_phys(self, paddr: int, size: int) -> bytes:
        """``size`` bytes of physical memory at ``paddr``; parts the input lacks read as zeros."""
        ...
