"""The kdump-compressed ("diskdump") on-disk structures, byte for byte (dump-formats.md §5).

Pure packing, unpacking and layout arithmetic: no I/O here.  64-bit little-endian layout, header
version 6, as makedumpfile 1.7 writes it and crash, libkdumpfile and drgn read it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np

from kdumpd.errors import KdumpdError

SIGNATURE: Final = b"KDUMP   "
LEGACY_SIGNATURE: Final = b"DISKDUMP"
HEADER_VERSION: Final = 6
STATUS_INCOMPLETE: Final = 0x08
SUB_HEADER_SIZE: Final = 104
DESC_SIZE: Final = 24
UTS_FIELD: Final = 65
# The u32 max_mapnr field is obsolete: it saturates and readers of version 6 use max_mapnr_64.
_U32_MAX: Final = 0xFFFFFFFF
_U64: Final = (1 << 64) - 1

_HEADER = struct.Struct("<8si390s6xqqIiiIIIIIIi")
_SUB_HEADER = struct.Struct("<QiiQQQQQQQQQQQ")
assert _HEADER.size == 464 and _SUB_HEADER.size == SUB_HEADER_SIZE

# One page descriptor: absolute offset of the blob, its size, compression flag, page flags (0).
DESC_DTYPE: Final = np.dtype(
    [("offset", "<i8"), ("size", "<u4"), ("flags", "<u4"), ("pflags", "<u8")]
)
assert DESC_DTYPE.itemsize == DESC_SIZE


class KdumpFormatError(KdumpdError):
    """A kdump-compressed file's header or layout is not what the format allows."""


@dataclass(frozen=True)
class Utsname:
    """``struct new_utsname`` of the crashed kernel: six NUL-padded 65-byte fields."""

    sysname: str = "Linux"
    nodename: str = ""
    release: str = ""
    version: str = ""
    machine: str = "x86_64"
    domainname: str = ""

    def pack(self) -> bytes:
        out = b""
        for value in (
            self.sysname,
            self.nodename,
            self.release,
            self.version,
            self.machine,
            self.domainname,
        ):
            # Byte 64 of every field stays NUL: libkdumpfile rejects a header otherwise.
            raw = value.encode("utf-8", "replace")[: UTS_FIELD - 1]
            out += raw.ljust(UTS_FIELD, b"\0")
        return out

    @classmethod
    def unpack(cls, raw: bytes) -> Utsname:
        fields = [
            raw[i * UTS_FIELD : (i + 1) * UTS_FIELD].split(b"\0", 1)[0].decode("utf-8", "replace")
            for i in range(6)
        ]
        return cls(*fields)


@dataclass(frozen=True)
class DiskDumpHeader:
    utsname: Utsname
    block_size: int
    sub_hdr_size: int
    bitmap_blocks: int
    max_mapnr: int
    nr_cpus: int
    status: int
    crash_time: int = 0
    header_version: int = HEADER_VERSION
    signature: bytes = SIGNATURE

    @property
    def incomplete(self) -> bool:
        return bool(self.status & STATUS_INCOMPLETE)

    def with_status(self, status: int) -> DiskDumpHeader:
        return replace(self, status=status)

    def pack(self) -> bytes:
        # tv_usec is always 0: libkdumpfile probes the 32-bit layout first, and a tv_usec that
        # looks like a block size makes it mis-parse the file (dump-formats.md §5.9).
        return _HEADER.pack(
            self.signature,
            self.header_version,
            self.utsname.pack(),
            self.crash_time,
            0,
            self.status,
            self.block_size,
            self.sub_hdr_size,
            self.bitmap_blocks,
            min(self.max_mapnr, _U32_MAX),
            0,
            0,
            0,
            0,
            self.nr_cpus,
        )

    @classmethod
    def unpack(cls, raw: bytes, max_mapnr_64: int | None = None) -> DiskDumpHeader:
        if len(raw) < _HEADER.size:
            raise KdumpFormatError(f"header: {len(raw)} bytes, expected {_HEADER.size}")
        (sig, version, uts, tv_sec, _usec, status, bs, sub, bblocks, mapnr32, *_rest) = (
            _HEADER.unpack_from(raw)
        )
        nr_cpus = _rest[-1]
        if sig not in (SIGNATURE, LEGACY_SIGNATURE):
            raise KdumpFormatError(f"signature {sig!r} is not {SIGNATURE!r}")
        return cls(
            utsname=Utsname.unpack(uts),
            block_size=bs,
            sub_hdr_size=sub,
            bitmap_blocks=bblocks,
            max_mapnr=max_mapnr_64 if max_mapnr_64 is not None else mapnr32,
            nr_cpus=nr_cpus,
            status=status,
            crash_time=tv_sec,
            header_version=version,
            signature=sig,
        )


@dataclass(frozen=True)
class SubHeader:
    phys_base: int
    dump_level: int
    offset_vmcoreinfo: int
    size_vmcoreinfo: int
    offset_note: int
    size_note: int
    max_mapnr_64: int
    split: int = 0
    start_pfn_64: int = 0
    end_pfn_64: int = 0
    offset_eraseinfo: int = 0
    size_eraseinfo: int = 0

    def pack(self) -> bytes:
        return _SUB_HEADER.pack(
            self.phys_base & _U64,
            self.dump_level,
            self.split,
            min(self.start_pfn_64, _U32_MAX),
            min(self.end_pfn_64, _U32_MAX),
            self.offset_vmcoreinfo,
            self.size_vmcoreinfo,
            self.offset_note,
            self.size_note,
            self.offset_eraseinfo,
            self.size_eraseinfo,
            self.start_pfn_64,
            self.end_pfn_64,
            self.max_mapnr_64,
        )

    @classmethod
    def unpack(cls, raw: bytes) -> SubHeader:
        if len(raw) < _SUB_HEADER.size:
            raise KdumpFormatError(f"sub header: {len(raw)} bytes, expected {_SUB_HEADER.size}")
        (pb, level, split, _s32, _e32, ovi, svi, onote, snote, oerase, serase, s64, e64, mapnr) = (
            _SUB_HEADER.unpack_from(raw)
        )
        return cls(
            phys_base=pb,
            dump_level=level,
            offset_vmcoreinfo=ovi,
            size_vmcoreinfo=svi,
            offset_note=onote,
            size_note=snote,
            max_mapnr_64=mapnr,
            split=split,
            start_pfn_64=s64,
            end_pfn_64=e64,
            offset_eraseinfo=oerase,
            size_eraseinfo=serase,
        )


@dataclass(frozen=True)
class Layout:
    """Where each part of a kdump-compressed file starts (dump-formats.md §5.1)."""

    block_size: int
    max_mapnr: int
    note_size: int
    sub_hdr_blocks: int = field(init=False)
    bitmap_blocks: int = field(init=False)

    def __post_init__(self) -> None:
        bs = self.block_size
        object.__setattr__(self, "sub_hdr_blocks", -(-(SUB_HEADER_SIZE + self.note_size) // bs))
        bitmap_bytes = -(-self.max_mapnr // 8)
        object.__setattr__(self, "bitmap_blocks", 2 * -(-bitmap_bytes // bs))

    @property
    def note_offset(self) -> int:
        return self.block_size + SUB_HEADER_SIZE

    @property
    def bitmap1_offset(self) -> int:
        return (1 + self.sub_hdr_blocks) * self.block_size

    @property
    def bitmap_len(self) -> int:
        """Bytes of one bitmap on disk (a whole number of blocks)."""
        return self.bitmap_blocks // 2 * self.block_size

    @property
    def bitmap2_offset(self) -> int:
        return self.bitmap1_offset + self.bitmap_len

    @property
    def desc_offset(self) -> int:
        return (1 + self.sub_hdr_blocks + self.bitmap_blocks) * self.block_size

    def data_offset(self, num_dumpable: int) -> int:
        return self.desc_offset + DESC_SIZE * num_dumpable
