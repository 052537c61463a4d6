"""ELF vmcore output (``-E``), laid out as makedumpfile writes it (dump-formats.md §7).

ELF header, program headers (PT_NOTE first), an extended-numbering section header when there
are 65535 or more segments, the input's notes verbatim, then segment data back to back without
page alignment.  Each input PT_LOAD is split where at least 256 consecutive pages are excluded:
the excluded run stays in the preceding segment as ``p_memsz > p_filesz`` (readers see zeros),
shorter runs are written with their real contents.  Incomplete files carry ``e_flags`` bit 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from kdumpd.dumpfile.pages import Bitmap, iter_runs
from kdumpd.dumpfile.progress import Progress
from kdumpd.dumpfile.sink import Sink
from kdumpd.vmcore.elfhdr import EHDR, EM_X86_64, ET_CORE, PHDR, PN_XNUM, PT_LOAD, PT_NOTE, SHDR
from kdumpd.vmcore.source import DumpSource

PFN_EXCLUDED: Final = 256
ELF_INCOMPLETE: Final = 1
_IDENT: Final = b"\x7fELF\x02\x01\x01".ljust(16, b"\0")
_COPY_BYTES: Final = 512 << 10  # per read: bounded like the kdump batches


class LoadLike(Protocol):
    @property
    def paddr(self) -> int: ...
    @property
    def vaddr(self) -> int: ...
    @property
    def memsz(self) -> int: ...


@dataclass(frozen=True)
class Segment:
    paddr: int
    vaddr: int
    memsz: int


@dataclass(frozen=True)
class OutSegment:
    paddr: int
    vaddr: int
    filesz: int
    memsz: int


def segments_from_bitmap(bitmap1: Bitmap, page_size: int) -> list[Segment]:
    """PT_LOADs for an input without them (a kdump file): one per RAM run, vaddr = paddr."""
    return [
        Segment(start * page_size, start * page_size, count * page_size)
        for start, count in iter_runs(bitmap1)
    ]


def plan_segments(loads: Sequence[LoadLike], bitmap2: Bitmap, page_size: int) -> list[OutSegment]:
    """Output PT_LOADs: each input load cut at runs of ``PFN_EXCLUDED`` or more excluded pages.

    Shorter runs between kept pages (and at the load's start) are written with their contents;
    excluded pages after the last kept one only extend ``p_memsz``.
    """
    out: list[OutSegment] = []
    nbits = len(bitmap2) * 8
    for load in loads:
        start, end = load.paddr, load.paddr + load.memsz
        first = start // page_size
        last = min(-(-end // page_size), nbits)
        pieces: list[tuple[int, int, int]] = []  # paddr, filesz, memsz
        cursor = start
        for gf, gl in _groups(bitmap2, first, last):
            lo, hi = max(start, gf * page_size), min(end, (gl + 1) * page_size)
            if lo > cursor:
                pieces = _extend_last(pieces, cursor, lo)
            pieces.append((lo, hi - lo, hi - lo))
            cursor = hi
        if cursor < end or not pieces:
            pieces = _extend_last(pieces, cursor, end)
        out.extend(
            OutSegment(p, load.vaddr + (p - load.paddr), filesz, memsz)
            for p, filesz, memsz in pieces
        )
    return out


def _groups(bitmap2: Bitmap, first: int, last: int) -> Iterator[tuple[int, int]]:
    """``(first_pfn, last_pfn)`` of kept pfns in ``[first, last)``, merged across excluded gaps
    shorter than ``PFN_EXCLUDED``; a short gap at ``first`` joins the first group."""
    lo_byte = first // 8
    group: list[int] | None = None
    for run_start, count in iter_runs(bitmap2[lo_byte : -(-last // 8)]):
        s = max(run_start + lo_byte * 8, first)
        e = min(run_start + lo_byte * 8 + count, last) - 1
        if s > e:
            continue
        if group is None:
            group = [first if s - first < PFN_EXCLUDED else s, e]
        elif s - group[1] - 1 < PFN_EXCLUDED:
            group[1] = e
        else:
            yield group[0], group[1]
            group = [s, e]
    if group is not None:
        yield group[0], group[1]


def _extend_last(
    pieces: list[tuple[int, int, int]], lo: int, hi: int
) -> list[tuple[int, int, int]]:
    """Add the excluded range [lo, hi) as zero-filled memory at the end of the last piece."""
    if pieces:
        p, filesz, memsz = pieces[-1]
        pieces[-1] = (p, filesz, memsz + hi - lo)
    else:
        pieces.append((lo, 0, hi - lo))
    return pieces


class ElfWriter:
    """Writes the notes and the planned segments of ``source`` to ``sink``."""

    def __init__(
        self, sink: Sink, notes: bytes, segments: Sequence[OutSegment], page_size: int
    ) -> None:
        self.sink = sink
        self.notes = notes
        self.segments = list(segments)
        self.page_size = page_size
        count = 1 + len(self.segments)
        self.extended = count >= PN_XNUM
        self.phnum = count
        self.headers_end = 64 + PHDR.size * count + (SHDR.size if self.extended else 0)
        self.notes_offset = self.headers_end
        self.data_offset = self.notes_offset + len(notes)
        self.total_bytes = sum(s.filesz for s in self.segments)
        self.bytes_written = 0
        self._finished = False

    def headers(self, incomplete: bool) -> bytes:
        shoff = 64 + PHDR.size * self.phnum if self.extended else 0
        ehdr = EHDR.pack(
            _IDENT,
            ET_CORE,
            EM_X86_64,
            1,
            0,
            64,
            shoff,
            ELF_INCOMPLETE if incomplete else 0,
            64,
            PHDR.size,
            PN_XNUM if self.extended else self.phnum,
            SHDR.size if self.extended else 0,
            1 if self.extended else 0,
            0,
        )
        parts = [
            ehdr,
            PHDR.pack(PT_NOTE, 0, self.notes_offset, 0, 0, len(self.notes), len(self.notes), 0),
        ]
        offset = self.data_offset
        for seg in self.segments:
            # A segment without file data points at offset 0, as makedumpfile writes it.
            parts.append(
                PHDR.pack(
                    PT_LOAD,
                    7,
                    offset if seg.filesz else 0,
                    seg.vaddr,
                    seg.paddr,
                    seg.filesz,
                    seg.memsz,
                    0,
                )
            )
            offset += seg.filesz
        if self.extended:
            parts.append(SHDR.pack(0, 0, 0, 0, 0, 0, 0, self.phnum, 0, 0))
        return b"".join(parts)

    def write(self, source: DumpSource, progress: Progress) -> None:
        if self.sink.seekable:
            self.sink.write_at(0, self.headers(incomplete=True))
        self.sink.write_at(self.notes_offset, self.notes)
        offset = self.data_offset
        for seg in self.segments:
            pos, end = seg.paddr, seg.paddr + seg.filesz
            while pos < end:
                size = min(end - pos, _COPY_BYTES - pos % self.page_size)
                self.sink.write_at(offset, source.read_phys(pos, size))
                offset += size
                pos += size
                self.bytes_written += size
                progress.update(self.bytes_written, self.total_bytes)
        progress.update(self.total_bytes, self.total_bytes)
        if self.sink.seekable:
            # As for kdump files: the data is synced before the headers say it is complete.
            self.sink.finish()
            self.sink.write_at(0, self.headers(incomplete=False))
        else:
            self.sink.write_at(0, self.headers(incomplete=False))
            self.sink.finish()
        self._finished = True

    def abort(self) -> None:
        """After a failure: a stream gets headers marked incomplete and its end record."""
        if self._finished or self.sink.seekable:
            return
        self.sink.write_at(0, self.headers(incomplete=True))
        self.sink.finish()
