"""Streaming writer of kdump-compressed dumps (dump-formats.md §5).

The file is written front to back in one pass: header, sub header and notes, both bitmaps, then
for each batch of pages its data followed by its descriptors.  Nothing needs the whole dump in
memory.  A file that is not finished is always marked incomplete: on a seekable output the header
goes out first with ``DUMP_DH_COMPRESSED_INCOMPLETE`` set and is rewritten clean only after every
byte is written and synced; a flattened stream gets its header record last.  Descriptors follow
the data they point at, so a dump cut short by a full disk holds zero descriptors ("lost page")
rather than descriptors pointing at bytes that were never written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from kdumpd.dumpfile.codecs import Codec, Page
from kdumpd.dumpfile.kdump_format import (
    DESC_DTYPE,
    STATUS_INCOMPLETE,
    DiskDumpHeader,
    Layout,
    SubHeader,
    Utsname,
)
from kdumpd.dumpfile.pages import popcount
from kdumpd.dumpfile.sink import Sink
from kdumpd.errors import KdumpdError


@dataclass(frozen=True)
class DumpMeta:
    """What a dump header says about the crashed kernel."""

    utsname: Utsname
    page_size: int
    max_mapnr: int
    notes: bytes
    nr_cpus: int
    phys_base: int
    crash_time: int
    vmcoreinfo_offset: int | None  # offset of the VMCOREINFO desc inside ``notes``
    vmcoreinfo_size: int
    # The input itself is a dump cut short: what it lost, its re-filtered copy lacks too.
    input_incomplete: bool = False


@dataclass
class WriteStats:
    pages: int = 0
    zero_pages: int = 0
    raw_pages: int = 0
    bytes_written: int = 0


class KdumpWriter:
    """Writes one kdump-compressed dump; call :meth:`start`, :meth:`write_pages`…, :meth:`finish`.

    ``bitmap2`` fixes which pfns get a descriptor; ``write_pages`` must be fed exactly those pfns'
    pages, in pfn order.  With ``shared_zero`` (dump level bit 1) all-zero pages share one stored
    zero page, as makedumpfile does.
    """

    def __init__(
        self,
        sink: Sink,
        meta: DumpMeta,
        codec: Codec,
        bitmap1: npt.NDArray[np.uint8],
        bitmap2: npt.NDArray[np.uint8],
        dump_level: int,
    ) -> None:
        self.sink = sink
        self.meta = meta
        self.codec = codec
        self.bitmap1 = bitmap1
        self.bitmap2 = bitmap2
        self.dump_level = dump_level
        self.shared_zero = bool(dump_level & 1)
        self.layout = Layout(meta.page_size, meta.max_mapnr, len(meta.notes))
        self.num_dumpable = popcount(bitmap2)
        self.stats = WriteStats()
        self._desc_cursor = self.layout.desc_offset
        self._data_cursor = self.layout.data_offset(self.num_dumpable)
        self._zero_offset = self._data_cursor
        self._finished = False

    def header(self, incomplete: bool) -> DiskDumpHeader:
        return DiskDumpHeader(
            utsname=self.meta.utsname,
            block_size=self.meta.page_size,
            sub_hdr_size=self.layout.sub_hdr_blocks,
            bitmap_blocks=self.layout.bitmap_blocks,
            max_mapnr=self.meta.max_mapnr,
            nr_cpus=self.meta.nr_cpus,
            status=self.codec.flag
            | (STATUS_INCOMPLETE if incomplete or self.meta.input_incomplete else 0),
            crash_time=self.meta.crash_time,
        )

    def sub_header(self) -> SubHeader:
        lay = self.layout
        vi_off = self.meta.vmcoreinfo_offset
        return SubHeader(
            phys_base=self.meta.phys_base,
            dump_level=self.dump_level,
            offset_vmcoreinfo=lay.note_offset + vi_off if vi_off is not None else 0,
            size_vmcoreinfo=self.meta.vmcoreinfo_size if vi_off is not None else 0,
            offset_note=lay.note_offset,
            size_note=len(self.meta.notes),
            max_mapnr_64=self.meta.max_mapnr,
        )

    def start(self) -> None:
        lay = self.layout
        if self.sink.seekable:
            self._write(0, self.header(incomplete=True).pack())
        self._write(self.meta.page_size, self.sub_header().pack() + self.meta.notes)
        self._write(lay.bitmap1_offset, _fit(self.bitmap1, lay.bitmap_len))
        self._write(lay.bitmap2_offset, _fit(self.bitmap2, lay.bitmap_len))
        if self.shared_zero:
            self._write(self._zero_offset, bytes(self.meta.page_size))
            self._data_cursor += self.meta.page_size

    def compress_pages(self, pages: Sequence[Page], zero: npt.NDArray[np.bool_]) -> Sequence[Page]:
        """The blobs of the pages that are stored (not shared zero pages), in order.

        Touches no writer state, so batches may be compressed on other threads, ahead of
        :meth:`write_pages`.
        """
        return self.codec.compress([pages[i] for i in self._stored(zero).tolist()])

    def write_pages(
        self,
        pages: Sequence[Page],
        zero: npt.NDArray[np.bool_],
        blobs: Sequence[Page] | None = None,
    ) -> None:
        """Store the next ``len(pages)`` dumpable pages; ``zero[i]`` says page i is all zero.

        ``blobs`` is what :meth:`compress_pages` returned for them, if it was called already.
        """
        n = len(pages)
        if self.stats.pages + n > self.num_dumpable:
            raise KdumpdError(
                f"internal: {self.stats.pages + n} pages for {self.num_dumpable} descriptors"
            )
        ps = self.meta.page_size
        descs = np.zeros(n, dtype=DESC_DTYPE)
        shared = zero if self.shared_zero else np.zeros(n, dtype=np.bool_)
        stored = self._stored(zero)
        stored_idx = stored.tolist()
        if blobs is None:
            blobs = self.compress_pages(pages, zero)
        sizes = np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs))
        # A blob that is not smaller than the page is worthless: store the page raw.
        raw = (sizes >= ps) | (sizes == 0) | (self.codec.flag == 0)
        sizes[raw] = ps
        keep_raw = raw.tolist()
        chunks = [pages[i] if r else b for i, r, b in zip(stored_idx, keep_raw, blobs, strict=True)]
        offsets = self._data_cursor + np.cumsum(sizes) - sizes
        descs["offset"][stored] = offsets
        descs["size"][stored] = sizes
        descs["flags"][stored] = np.where(raw, 0, self.codec.flag)
        zero_idx = np.flatnonzero(shared)
        descs["offset"][zero_idx] = self._zero_offset
        descs["size"][zero_idx] = ps

        self._write(self._data_cursor, *chunks)
        self._data_cursor += int(sizes.sum())
        self._write(self._desc_cursor, descs.tobytes())
        self._desc_cursor += descs.nbytes
        self.stats.pages += n
        self.stats.zero_pages += len(zero_idx)
        self.stats.raw_pages += int(raw.sum())

    def _stored(self, zero: npt.NDArray[np.bool_]) -> npt.NDArray[np.intp]:
        """Indexes of the pages that get their own data (all of them without shared zeros)."""
        return np.flatnonzero(~zero) if self.shared_zero else np.arange(len(zero))

    def finish(self) -> None:
        """Complete the dump: sync the data, then (re)write the header without the flag."""
        if self.stats.pages != self.num_dumpable:
            raise KdumpdError(
                f"internal: wrote {self.stats.pages} of {self.num_dumpable} dumpable pages"
            )
        if self.sink.seekable:
            # The data is on disk before a header says it is complete.  That header may reach
            # the disk later: until it does, the synced one says "incomplete".
            self.sink.finish()
            self._write(0, self.header(incomplete=False).pack())
        else:
            self._write(0, self.header(incomplete=False).pack())
            self.sink.finish()  # the end record
        self._finished = True

    def abort(self) -> None:
        """After a failure: leave the output marked incomplete, as far as it can still be written.

        A seekable output already carries the incomplete header.  A stream gets the header now
        (flag set) and its end record, so ``-R`` rebuilds a file that says it is incomplete.
        """
        if self._finished or self.sink.seekable:
            return
        self._write(0, self.header(incomplete=True).pack())
        self.sink.finish()

    def _write(self, offset: int, *parts: Page) -> None:
        self.sink.write_at(offset, *parts)
        self.stats.bytes_written += sum(map(len, parts))


def _fit(bitmap: npt.NDArray[np.uint8], size: int) -> bytes:
    """The bitmap padded with zero bits to ``size`` bytes (bits past max_mapnr stay 0)."""
    raw = bitmap.tobytes()
    if len(raw) > size:
        raise KdumpdError(f"internal: bitmap of {len(raw)} bytes for a {size}-byte area")
    return raw.ljust(size, b"\0")
