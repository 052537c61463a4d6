"""Bounded access to a large file: one mmap window at a time, pread where mmap is refused.

A capture runs in a crash kernel with a few tens of MB free, and file pages of a mapping count
toward RSS while they are mapped. So the whole vmcore is never mapped: a window of a few MiB
follows the reads, and the previous one is dropped when the window moves, which unmaps it and
releases its pages. A view handed out keeps its own window alive until the caller lets go of it
(Python's mmap refuses to unmap while a buffer is exported), so the window is dropped by
reference rather than closed; callers must not hoard views. ``MADV_DONTNEED`` would add nothing
to the unmap, and ``/proc/vmcore`` maps old memory with ``remap_pfn_range``, which refuses it.
"""

from __future__ import annotations

import mmap
import os

from kdumpd.vmcore.errors import VmcoreError, VmcoreTruncatedError

WINDOW_BYTES = 2 << 20  # a remap per 2 MiB costs microseconds; RSS is what is scarce
_GRANULE = mmap.ALLOCATIONGRANULARITY


class FileWindow:
    """Read-only views of ``[offset, offset + length)`` of an open file."""

    def __init__(self, fd: int, file_size: int, origin: str, window: int = WINDOW_BYTES) -> None:
        self._fd = fd
        self._size = file_size
        self._origin = origin
        self._window = max(window, _GRANULE)
        self._map: mmap.mmap | None = None
        self._map_start = 0
        self._map_end = 0
        self._use_mmap = True

    def view(self, offset: int, length: int) -> memoryview:
        """Bytes of the file, zero-copy where possible; valid while the caller holds them."""
        if length <= 0:
            return memoryview(b"")
        self._check_bounds(offset, length)
        if self._use_mmap and not self._map_start <= offset < offset + length <= self._map_end:
            self._remap(offset, length)
        if self._map is not None and self._use_mmap:
            start = offset - self._map_start
            return memoryview(self._map)[start : start + length]
        return memoryview(self._pread(offset, length))

    def read(self, offset: int, length: int) -> bytes:
        """A copy of the bytes: small reads go straight to pread, so they never move the window."""
        if self._map is not None and self._map_start <= offset < offset + length <= self._map_end:
            start = offset - self._map_start
            return self._map[start : start + length]
        self._check_bounds(offset, length)
        return self._pread(offset, length)

    def close(self) -> None:
        """Forget the window; views still held by callers stay valid until they are released."""
        self._map = None

    def _check_bounds(self, offset: int, length: int) -> None:
        if offset < 0 or offset + length > self._size:
            raise VmcoreTruncatedError(
                f"{self._origin}: read of {length} bytes at offset {offset} is past the end "
                f"of the file ({self._size} bytes)"
            )

    def _remap(self, offset: int, length: int) -> None:
        start = offset - offset % _GRANULE
        end = min(self._size, max(start + self._window, offset + length))
        self._map = None
        try:
            self._map = mmap.mmap(
                self._fd, end - start, mmap.MAP_SHARED, mmap.PROT_READ, offset=start
            )
        except (OSError, ValueError):
            # Some files (a vmcore on a file system without mmap, old kernels' /proc/vmcore)
            # cannot be mapped: read them instead, for the rest of the run.
            self._use_mmap = False
            return
        self._map_start, self._map_end = start, end

    def _pread(self, offset: int, length: int) -> bytes:
        chunks = []
        done = 0
        while done < length:
            try:
                chunk = os.pread(self._fd, length - done, offset + done)
            except OSError as exc:
                raise VmcoreError(
                    f"{self._origin}: read error at offset {offset + done}: {exc.strerror}"
                ) from None
            if not chunk:
                raise VmcoreTruncatedError(
                    f"{self._origin}: file ends at offset {offset + done}, "
                    f"{length - done} bytes short"
                )
            chunks.append(chunk)
            done += len(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)
