"""A kdump-compressed file as a dump source, so that a saved dump can be re-filtered.

Implements :class:`kdumpd.vmcore.source.DumpSource`.  Only the header, the notes and the two
bitmaps are held in memory (2 bits per pfn); descriptors and page blobs are read on demand.
"""

from __future__ import annotations

import os
from types import TracebackType
from typing import Final

import numpy as np
import numpy.typing as npt

from kdumpd.dumpfile.codecs import COMPRESSION_FLAGS, Codec, codec_for_flag
from kdumpd.dumpfile.flat import is_flattened
from kdumpd.dumpfile.kdump_format import (
    DESC_DTYPE,
    DESC_SIZE,
    SIGNATURE,
    DiskDumpHeader,
    KdumpFormatError,
    Layout,
    SubHeader,
)

# Bits of bitmap 2 summarised per prefix-count entry.
_PREFIX_BYTES: Final = 64
_POPCOUNT: Final = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def is_kdump(head: bytes) -> bool:
    return head[:8] == SIGNATURE


class KdumpSource:
    """Pages of a kdump-compressed file; excluded and lost pages read as zeros."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise KdumpFormatError(f"{path}: cannot open: {exc.strerror}") from exc
        try:
            self._load()
        except BaseException:
            os.close(self._fd)
            raise

    def _pread(self, size: int, offset: int, what: str) -> bytes:
        # Sizes come from the file: check them against its length before allocating anything.
        if offset < 0 or size < 0 or offset + size > self._size:
            raise KdumpFormatError(
                f"{self.path}: {what} ({size} bytes at offset {offset}) lies past the end of the"
                f" file ({self._size} bytes): the file is truncated or corrupt"
            )
        try:
            data = os.pread(self._fd, size, offset)
        except OSError as exc:
            raise KdumpFormatError(f"{self.path}: cannot read {what}: {exc.strerror}") from exc
        if len(data) != size:
            raise KdumpFormatError(
                f"{self.path}: {what} at offset {offset} is cut short"
                f" ({len(data)} of {size} bytes): the file is truncated"
            )
        return data

    def _load(self) -> None:
        self._size = os.fstat(self._fd).st_size
        head = self._pread(min(4096, self._size), 0, "header")
        if is_flattened(head):
            raise KdumpFormatError(
                f"{self.path}: a flattened dump; rebuild it first with kdumpd-capture -R"
            )
        hdr = DiskDumpHeader.unpack(head)
        bs = hdr.block_size
        if bs < 512 or bs & (bs - 1) or bs > 1 << 18:
            raise KdumpFormatError(f"{self.path}: header block_size {bs} is not a page size")
        if hdr.header_version < 1:
            raise KdumpFormatError(f"{self.path}: header_version {hdr.header_version} too old")
        sub = SubHeader.unpack(self._pread(104, bs, "sub header"))
        max_mapnr = sub.max_mapnr_64 if hdr.header_version >= 6 else hdr.max_mapnr
        self.header = DiskDumpHeader.unpack(head, max_mapnr)
        self.sub_header = sub
        self.layout = Layout(bs, max_mapnr, sub.size_note)
        if hdr.sub_hdr_size != self.layout.sub_hdr_blocks or hdr.bitmap_blocks != (
            self.layout.bitmap_blocks
        ):
            raise KdumpFormatError(
                f"{self.path}: sub_hdr_size {hdr.sub_hdr_size} / bitmap_blocks"
                f" {hdr.bitmap_blocks} do not fit max_mapnr {max_mapnr}"
            )
        if hdr.status & ~COMPRESSION_FLAGS & ~0x18:
            raise KdumpFormatError(f"{self.path}: unknown header status 0x{hdr.status:x}")
        self._notes = self._pread(sub.size_note, sub.offset_note, "notes") if sub.size_note else b""
        self._vmcoreinfo = (
            self._pread(sub.size_vmcoreinfo, sub.offset_vmcoreinfo, "VMCOREINFO")
            if sub.size_vmcoreinfo and sub.offset_vmcoreinfo
            else None
        )
        nbytes = -(-max_mapnr // 8)
        lay = self.layout
        self._bitmap1 = np.frombuffer(self._pread(nbytes, lay.bitmap1_offset, "bitmap 1"), np.uint8)
        self._bitmap2 = np.frombuffer(self._pread(nbytes, lay.bitmap2_offset, "bitmap 2"), np.uint8)
        counts = _POPCOUNT[self._bitmap2]
        padded = np.zeros(-(-nbytes // _PREFIX_BYTES) * _PREFIX_BYTES, dtype=np.int64)
        padded[:nbytes] = counts
        per_block = padded.reshape(-1, _PREFIX_BYTES).sum(axis=1)
        self._prefix = np.concatenate(([0], np.cumsum(per_block)))
        self._counts = counts
        self._codecs: dict[int, Codec] = {}

    # DumpSource -----------------------------------------------------------------------------

    @property
    def page_size(self) -> int:
        return self.header.block_size

    @property
    def max_mapnr(self) -> int:
        return self.header.max_mapnr

    @property
    def notes(self) -> bytes:
        return self._notes

    @property
    def vmcoreinfo_raw(self) -> bytes | None:
        return self._vmcoreinfo

    def present_bitmap(self) -> npt.NDArray[np.uint8]:
        """The pfns whose contents this file holds (its bitmap 2)."""
        return self._bitmap2.copy()

    def ram_bitmap(self) -> npt.NDArray[np.uint8]:
        """The pfns that were RAM in the original vmcore (its bitmap 1)."""
        return self._bitmap1.copy()

    def read_pages(self, start_pfn: int, count: int) -> bytes:
        ps = self.page_size
        out = bytearray(count * ps)
        end = min(start_pfn + count, self.max_mapnr)
        if start_pfn >= end:
            return bytes(out)
        pfns = self._dumped_pfns(start_pfn, end)
        if len(pfns) == 0:
            return bytes(out)
        first = self._desc_index(int(pfns[0]))
        raw = self._pread(
            DESC_SIZE * len(pfns), self.layout.desc_offset + DESC_SIZE * first, "descriptors"
        )
        descs = np.frombuffer(raw, dtype=DESC_DTYPE)
        for pfn, desc in zip(pfns.tolist(), descs, strict=True):
            page = self._page(pfn, desc)
            if page is not None:
                pos = (pfn - start_pfn) * ps
                out[pos : pos + ps] = page
        return bytes(out)

    def read_phys(self, paddr: int, size: int) -> bytes:
        ps = self.page_size
        first = paddr // ps
        pages = -(-(paddr + size) // ps) - first
        skip = paddr - first * ps
        return self.read_pages(first, pages)[skip : skip + size]

    # internals ------------------------------------------------------------------------------

    def _dumped_pfns(self, start: int, end: int) -> npt.NDArray[np.int64]:
        lo, hi = start // 8, -(-end // 8)
        bits = np.unpackbits(self._bitmap2[lo:hi], bitorder="little")
        pfns = np.flatnonzero(bits).astype(np.int64) + lo * 8
        return pfns[(pfns >= start) & (pfns < end)]

    def _desc_index(self, pfn: int) -> int:
        byte = pfn // 8
        block = byte // _PREFIX_BYTES
        index = int(self._prefix[block])
        index += int(self._counts[block * _PREFIX_BYTES : byte].sum(dtype=np.int64))
        below = int(self._bitmap2[byte]) & ((1 << (pfn % 8)) - 1)
        return index + below.bit_count()

    def _page(self, pfn: int, desc: np.void) -> bytes | None:
        offset, size, flags = int(desc["offset"]), int(desc["size"]), int(desc["flags"])
        ps = self.page_size
        if offset == 0:
            return None  # a page lost when the dump was cut short
        if size > ps or size == 0:
            raise KdumpFormatError(f"{self.path}: pfn {pfn:#x}: descriptor size {size}")
        blob = self._pread(size, offset, f"page {pfn:#x}")
        if flags & COMPRESSION_FLAGS == 0:
            if size != ps:
                raise KdumpFormatError(f"{self.path}: pfn {pfn:#x}: raw page of {size} bytes")
            return blob
        flag = flags & COMPRESSION_FLAGS
        codec = self._codecs.get(flag)
        if codec is None:
            codec = self._codecs[flag] = codec_for_flag(flag)
        return codec.decompress(blob, ps)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> KdumpSource:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
