"""makedumpfile's flattened format (``-F``) and its reassembly (``-R``), dump-formats.md §6.

A flattened stream never seeks: a 4096-byte ``makedumpfile`` header, then one record per write,
each ``{int64 offset, int64 size}`` big endian followed by the bytes destined for that offset,
then an end record of two -1.  It can go through a pipe or over SSH and be rebuilt later.
"""

from __future__ import annotations

import os
import struct
from typing import BinaryIO, Final

from kdumpd.dumpfile.kdump_format import (
    LEGACY_SIGNATURE,
    SIGNATURE,
    STATUS_INCOMPLETE,
)
from kdumpd.dumpfile.sink import Buffer, DumpWriteError, write_all
from kdumpd.errors import KdumpdError

FLAT_SIGNATURE: Final = b"makedumpfile\0\0\0\0"
FLAT_HEADER_SIZE: Final = 4096
TYPE_FLAT_HEADER: Final = 1
_RECORD = struct.Struct(">qq")
END_RECORD: Final = _RECORD.pack(-1, -1)
_COPY_CHUNK: Final = 1 << 20
# Byte offset of the kdump header's ``status`` and of an ELF header's ``e_flags``.
_KDUMP_STATUS_OFFSET: Final = 424
_ELF_FLAGS_OFFSET: Final = 48


class FlatFormatError(KdumpdError):
    """The input is not a flattened stream, or it ends early."""


def flat_header() -> bytes:
    return (FLAT_SIGNATURE + struct.pack(">qq", TYPE_FLAT_HEADER, 1)).ljust(FLAT_HEADER_SIZE, b"\0")


class FlatSink:
    """Writes the flattened framing to a file descriptor (usually stdout) strictly in sequence."""

    seekable = False

    def __init__(self, fd: int, name: str = "<stdout>") -> None:
        self.fd = fd
        self.name = name
        self.sent = 0  # bytes of stream written so far
        self._emit(flat_header())

    def _emit(self, *parts: Buffer) -> None:
        try:
            write_all(self.fd, parts)
        except OSError as exc:
            raise DumpWriteError(self.name, exc) from exc
        self.sent += sum(map(len, parts))

    def size_after(self, size: int) -> int:
        """The stream's length once a record of ``size`` bytes and the end record follow."""
        return self.sent + _RECORD.size + size + len(END_RECORD)

    def write_at(self, offset: int, *parts: Buffer) -> None:
        size = sum(map(len, parts))
        if size == 0:
            return  # an empty record would end makedumpfile -R's loop early
        self._emit(_RECORD.pack(offset, size), *parts)

    def finish(self) -> None:
        self._emit(END_RECORD)


def is_flattened(head: bytes) -> bool:
    return head.startswith(FLAT_SIGNATURE)


def _read_exact(stream: BinaryIO, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = stream.read(size - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def reassemble(stream: BinaryIO, out_fd: int, out_name: str) -> int:
    """Rebuild the original file from a flattened stream; returns the number of records.

    The payload is copied in bounded pieces, so memory stays flat whatever the record sizes.  A
    stream that ends before its end record leaves the rebuilt file marked incomplete (kdump
    header status or ELF ``e_flags``) and raises :class:`FlatFormatError`.
    """
    head = _read_exact(stream, FLAT_HEADER_SIZE)
    if len(head) < FLAT_HEADER_SIZE or not is_flattened(head):
        raise FlatFormatError("input: not a flattened dump (no makedumpfile signature)")
    (kind,) = struct.unpack_from(">q", head, len(FLAT_SIGNATURE))
    if kind != TYPE_FLAT_HEADER:
        raise FlatFormatError(f"input: flattened header type {kind}, expected {TYPE_FLAT_HEADER}")
    records = 0
    while True:
        raw = _read_exact(stream, _RECORD.size)
        if len(raw) < _RECORD.size:
            _mark_incomplete(out_fd)
            raise FlatFormatError(
                f"input: stream ends after {records} records without its end marker;"
                f" {out_name} is incomplete"
            )
        offset, size = _RECORD.unpack(raw)
        if (offset, size) == (-1, -1):
            return records
        if offset < 0 or size <= 0:
            _mark_incomplete(out_fd)
            raise FlatFormatError(f"input: record {records}: bad offset {offset} / size {size}")
        _copy_record(stream, out_fd, out_name, offset, size, records)
        records += 1


def _copy_record(
    stream: BinaryIO, out_fd: int, out_name: str, offset: int, size: int, index: int
) -> None:
    while size:
        chunk = stream.read(min(size, _COPY_CHUNK))
        if not chunk:
            _mark_incomplete(out_fd)
            raise FlatFormatError(f"input: record {index} is cut short; {out_name} is incomplete")
        try:
            write_all(out_fd, [chunk], offset)
        except OSError as exc:
            _mark_incomplete(out_fd)
            raise DumpWriteError(out_name, exc) from exc
        offset += len(chunk)
        size -= len(chunk)


def _mark_incomplete(fd: int) -> None:
    """Best effort: flag a partly rebuilt kdump or ELF file so that it never looks whole."""
    try:
        head = os.pread(fd, 64, 0)
        if head[:8] in (SIGNATURE, LEGACY_SIGNATURE) and len(head) >= 8:
            status = os.pread(fd, 4, _KDUMP_STATUS_OFFSET)
            if len(status) == 4:
                value = int.from_bytes(status, "little") | STATUS_INCOMPLETE
                os.pwrite(fd, value.to_bytes(4, "little"), _KDUMP_STATUS_OFFSET)
        elif head[:4] == b"\x7fELF" and len(head) >= _ELF_FLAGS_OFFSET + 4:
            flags = int.from_bytes(head[_ELF_FLAGS_OFFSET : _ELF_FLAGS_OFFSET + 4], "little")
            os.pwrite(fd, (flags | 1).to_bytes(4, "little"), _ELF_FLAGS_OFFSET)
    except OSError:
        pass  # the caller reports the original failure; this is only a courtesy flag
