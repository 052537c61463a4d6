"""An ELF64 x86_64 vmcore as a :class:`~kdumpd.vmcore.source.DumpSource`.

Reads ``/proc/vmcore`` (or a copy of it) and QEMU ``dump-guest-memory`` ELF files: ``e_phoff`` is
honoured (QEMU 7.2 sets it to 192, after a section header) and so is ``PN_XNUM`` (headers in
:mod:`kdumpd.vmcore.elfhdr`).

Physical addresses map to file offsets through the PT_LOADs, the first match in program-header
order winning as in makedumpfile: on x86_64 the kernel-text PT_LOAD overlaps the direct map, and
its pages must be neither counted nor read twice.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import os
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kdumpd.vmcore.elfhdr import (
    EHDR,
    PHDR,
    PT_LOAD,
    PT_NOTE,
    SHDR,
    ProgramHeader,
    needs_section0,
    parse_ehdr,
    parse_phdrs,
)
from kdumpd.vmcore.errors import VmcoreError, VmcoreFormatError, VmcoreTruncatedError
from kdumpd.vmcore.notes import NT_PRSTATUS, parse_notes
from kdumpd.vmcore.ranges import merge
from kdumpd.vmcore.source import DumpSource
from kdumpd.vmcore.vmcoreinfo import Vmcoreinfo, parse_vmcoreinfo
from kdumpd.vmcore.window import FileWindow
from kdumpd.vmcore.x86_64 import START_KERNEL_MAP

# Notes of /proc/vmcore are a few KiB per CPU; this bound only stops garbage from allocating.
MAX_NOTES_BYTES = 64 << 20
DEFAULT_PAGE_SIZE = 4096
MAX_PHYS_ADDR = 1 << 52  # x86_64 with 5-level paging
_NO_OFFSET = (1 << 64) - 1  # QEMU's p_offset for ranges it did not save


@dataclass(frozen=True)
class LoadSegment:
    """One PT_LOAD. ``offset`` is None when the segment has no file data (QEMU's -1)."""

    paddr: int
    vaddr: int
    memsz: int
    filesz: int
    offset: int | None


@dataclass(frozen=True)
class _Extent:
    """A disjoint physical range backed by the file, after first-match resolution."""

    start: int
    end: int
    offset: int


class ElfVmcore:
    """Physical memory and notes of an ELF vmcore, read through bounded mmap windows."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise VmcoreError(f"{self.path}: cannot open: {exc.strerror}") from None
        try:
            self._file_size = os.fstat(self._fd).st_size
            self._window = FileWindow(self._fd, self._file_size, self.path)
            self.loads, note_ranges = self._read_headers()
            self._notes_raw = b"".join(self._window.read(off, size) for off, size in note_ranges)
            self.note_list = parse_notes(self._notes_raw, self.path)
            info = next((n for n in self.note_list if n.name == "VMCOREINFO"), None)
            self._vmcoreinfo_raw = None if info is None else info.desc
            self.vmcoreinfo: Vmcoreinfo | None = (
                None if info is None else parse_vmcoreinfo(info.desc, self.path)
            )
            end = max(s.paddr + s.memsz for s in self.loads)
            if end > MAX_PHYS_ADDR:
                raise VmcoreFormatError(
                    f"{self.path}: a PT_LOAD ends at {end:#x}, beyond x86_64's 52-bit "
                    "physical space"
                )
        except BaseException:
            os.close(self._fd)
            raise
        self._page_size = self.vmcoreinfo.page_size if self.vmcoreinfo else DEFAULT_PAGE_SIZE
        self._extents = _resolve_extents(self.loads)
        self._starts = [e.start for e in self._extents]
        self._max_mapnr = -(-end // self._page_size)

    # -- DumpSource -----------------------------------------------------------------------------

    @property
    def page_size(self) -> int:
        return self._page_size

    @property
    def max_mapnr(self) -> int:
        return self._max_mapnr

    @property
    def notes(self) -> bytes:
        return self._notes_raw

    @property
    def vmcoreinfo_raw(self) -> bytes | None:
        return self._vmcoreinfo_raw

    @property
    def prstatus(self) -> list[bytes]:
        """``struct elf_prstatus`` of each CPU that saved its registers, in note order."""
        return [n.desc for n in self.note_list if n.name == "CORE" and n.type == NT_PRSTATUS]

    def load_pfn_spans(self, partial_tail: bool = False) -> list[tuple[int, int]]:
        """``[start_pfn, end_pfn)`` of each PT_LOAD, in program-header order.

        A partial leading page is included. A partial trailing page is included only with
        ``partial_tail``: makedumpfile counts it when it keeps its bitmaps whole and not when
        it works in cycles (see :func:`makedumpfile_single_cycle`)."""
        ps = self._page_size
        spans = []
        for seg in self.loads:
            end = seg.paddr + seg.memsz
            spans.append((seg.paddr // ps, -(-end // ps) if partial_tail else end // ps))
        return spans

    def present_ranges(self, partial_tail: bool = False) -> list[tuple[int, int]]:
        """Bitmap 1 as sorted, merged ``[start_pfn, end_pfn)`` ranges."""
        return merge(self.load_pfn_spans(partial_tail))

    def present_bitmap(self) -> npt.NDArray[np.uint8]:
        """Bitmap 1 as makedumpfile writes it for this input."""
        bitmap = np.zeros((self._max_mapnr + 7) // 8, dtype=np.uint8)
        for lo, hi in self.present_ranges(makedumpfile_single_cycle(self._max_mapnr)):
            set_bit_range(bitmap, lo, hi)
        return bitmap

    def original_pages(self, partial_tail: bool = False) -> int:
        """Pages summed over all PT_LOADs, as makedumpfile's "Original pages" counts them
        (kernel text counted again beside the direct map)."""
        return sum(max(0, hi - lo) for lo, hi in self.load_pfn_spans(partial_tail))

    def read_pages(self, start_pfn: int, count: int) -> bytes | memoryview:
        return self._read(start_pfn * self._page_size, count * self._page_size, zero_copy=True)

    def read_phys(self, paddr: int, size: int) -> bytes:
        return bytes(self._read(paddr, size, zero_copy=False))

    def backed_extents(self) -> list[tuple[int, int]]:
        """Disjoint sorted ``(start, end)`` physical ranges with file data."""
        return [(e.start, e.end) for e in self._extents]

    def close(self) -> None:
        self._window.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> ElfVmcore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------------------

    def _read(self, paddr: int, size: int, zero_copy: bool) -> bytes | memoryview:
        i = bisect.bisect_right(self._starts, paddr) - 1
        if i >= 0:
            ext = self._extents[i]
            if paddr + size <= ext.end:
                off = ext.offset + paddr - ext.start
                if zero_copy:
                    return self._window.view(off, size)
                return self._window.read(off, size)
        # Straddles extents or holes: assemble piecewise, zeros where the file has nothing.
        out = bytearray(size)
        end = paddr + size
        i = max(i, 0)
        while i < len(self._extents) and self._extents[i].start < end:
            ext = self._extents[i]
            lo, hi = max(paddr, ext.start), min(end, ext.end)
            if lo < hi:
                piece = self._window.read(ext.offset + lo - ext.start, hi - lo)
                out[lo - paddr : hi - paddr] = piece
            i += 1
        return memoryview(out) if zero_copy else bytes(out)

    def _read_headers(self) -> tuple[list[LoadSegment], list[tuple[int, int]]]:
        head = self._window.read(0, min(EHDR.size, self._file_size))
        shoff = needs_section0(head)
        section0 = None
        if shoff is not None and shoff + SHDR.size <= self._file_size:
            section0 = self._window.read(shoff, SHDR.size)
        header = parse_ehdr(head, section0, self.path)
        size = header.phnum * PHDR.size
        if header.phoff + size > self._file_size:
            raise VmcoreTruncatedError(f"{self.path}: program headers end past the end of the file")
        return self._check_segments(parse_phdrs(self._window.read(header.phoff, size)))

    def _check_segments(
        self, phdrs: list[ProgramHeader]
    ) -> tuple[list[LoadSegment], list[tuple[int, int]]]:
        loads: list[LoadSegment] = []
        note_ranges: list[tuple[int, int]] = []
        note_bytes = 0
        for index, ph in enumerate(phdrs):
            ptype, offset, filesz = ph.type, ph.offset, ph.filesz
            if ptype not in (PT_LOAD, PT_NOTE):
                continue
            if ptype == PT_LOAD and (offset == _NO_OFFSET or filesz == 0):
                loads.append(LoadSegment(ph.paddr, ph.vaddr, ph.memsz, 0, None))
                continue
            if offset + filesz > self._file_size:
                raise VmcoreTruncatedError(
                    f"{self.path}: is truncated: program header {index} ({ptype}) needs "
                    f"{offset + filesz} bytes, the file has {self._file_size}"
                )
            if ptype == PT_NOTE:
                note_bytes += filesz
                if note_bytes > MAX_NOTES_BYTES:
                    raise VmcoreFormatError(f"{self.path}: PT_NOTE segments exceed 64 MiB")
                note_ranges.append((offset, filesz))
                continue
            memsz = ph.memsz
            if filesz > memsz:
                raise VmcoreFormatError(
                    f"{self.path}: program header {index}: p_filesz {filesz} > p_memsz {memsz}"
                )
            loads.append(LoadSegment(ph.paddr, ph.vaddr, memsz, filesz, offset))
        if not loads:
            raise VmcoreFormatError(f"{self.path}: no PT_LOAD segment: not a vmcore")
        return loads, note_ranges


def kernel_text_load(source: DumpSource) -> tuple[int, int] | None:
    """``(p_vaddr, p_paddr)`` of the kernel-text PT_LOAD: the first whose virtual address lies in
    the kernel image map. :class:`~kdumpd.vmcore.x86_64.X86_64` derives phys_base from it when
    VMCOREINFO lacks NUMBER(phys_base). None for inputs that are not ELF vmcores or lack one."""
    if not isinstance(source, ElfVmcore):
        return None
    return next(((s.vaddr, s.paddr) for s in source.loads if s.vaddr >= START_KERNEL_MAP), None)


# makedumpfile's cyclic buffer is at most 4 MiB (calculate_cyclic_buffer_size).
MAX_CYCLIC_BUFFER = 4 << 20


def makedumpfile_single_cycle(max_mapnr: int) -> bool:
    """Whether makedumpfile keeps both bitmaps whole (its "non-cyclic" mode, in a temporary
    file) instead of working in cycles.

    It does when a buffer of min(4 MiB, 2 * max_mapnr / 8 bytes, rounded down) holds
    2 * max_mapnr bits, i.e. for machines up to 64 GiB whose max_mapnr is a multiple of 4,
    given 60 % of the capture kernel's free memory exceeds that buffer, which it does for
    any crashkernel size that can run a capture. The mode matters for bitmap 1 only: the whole
    bitmap includes a PT_LOAD's partial trailing page, the cyclic one does not.
    """
    bitmap_bytes = max_mapnr * 2 // 8
    return min(MAX_CYCLIC_BUFFER, bitmap_bytes) * 8 >= max_mapnr * 2


def set_bit_range(bitmap: npt.NDArray[np.uint8], lo: int, hi: int) -> None:
    """Set bits ``[lo, hi)`` of a packed little-endian bitmap (bit i of byte j = 8j+i)."""
    if lo >= hi:
        return
    first, last = lo >> 3, (hi - 1) >> 3
    if first == last:
        bitmap[first] |= ((1 << (hi - lo)) - 1) << (lo & 7)
        return
    bitmap[first] |= (0xFF << (lo & 7)) & 0xFF
    bitmap[first + 1 : last] = 0xFF
    bitmap[last] |= (1 << (((hi - 1) & 7) + 1)) - 1


def _resolve_extents(loads: list[LoadSegment]) -> list[_Extent]:
    """Disjoint, sorted file-backed extents; where PT_LOADs overlap the earlier one wins."""
    backed = [s for s in loads if s.offset is not None and s.filesz > 0]
    ordered = sorted(backed, key=lambda s: s.paddr)
    if all(a.paddr + a.filesz <= b.paddr for a, b in itertools.pairwise(ordered)):
        return [_Extent(s.paddr, s.paddr + s.filesz, s.offset or 0) for s in ordered]
    # Overlaps (the kernel-text PT_LOAD): sweep the boundaries; between two of them the segment
    # with the lowest program-header index that covers the range owns it. O(n log n), so that
    # no header table, however hostile, makes this quadratic.
    starting: dict[int, list[int]] = {}
    for index, seg in enumerate(backed):
        starting.setdefault(seg.paddr, []).append(index)
    points = sorted({p for s in backed for p in (s.paddr, s.paddr + s.filesz)})
    active: list[int] = []
    extents: list[_Extent] = []
    for here, there in itertools.pairwise(points):
        for index in starting.get(here, ()):
            heapq.heappush(active, index)
        while active and backed[active[0]].paddr + backed[active[0]].filesz <= here:
            heapq.heappop(active)  # ended; those below the top are dropped when they surface
        if not active:
            continue
        seg = backed[active[0]]
        offset = (seg.offset or 0) + here - seg.paddr
        last = extents[-1] if extents else None
        if last and last.end == here and last.offset + (last.end - last.start) == offset:
            extents[-1] = _Extent(last.start, there, last.offset)
        else:
            extents.append(_Extent(here, there, offset))
    return extents
