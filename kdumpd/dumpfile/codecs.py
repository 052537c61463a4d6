"""Page compression for kdump-compressed dumps: zstd (default), zlib, lzo, or none.

Each codec turns a batch of pages into one blob per page.  Codecs whose work runs without the GIL
say so (``concurrent``): the pipeline then compresses several batches at once on worker threads
(kdumpd/dumpfile/pipeline.py).  The flags are the page-descriptor and
header ``status`` values of dump-formats.md §5.4; the blob formats are what crash, libkdumpfile
and makedumpfile expect (zlib with its header, raw LZO1X-1, a standard zstd frame).
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from typing import Final

from kdumpd.errors import KdumpdError

FLAG_ZLIB: Final = 0x01
FLAG_LZO: Final = 0x02
FLAG_SNAPPY: Final = 0x04
FLAG_ZSTD: Final = 0x20
COMPRESSION_FLAGS: Final = FLAG_ZLIB | FLAG_LZO | FLAG_SNAPPY | FLAG_ZSTD


class CodecError(KdumpdError):
    """A codec is unavailable or a stored page does not decompress to one page."""


Page = bytes | memoryview


class Codec:
    """Compresses batches of pages; ``flag`` is 0 for the uncompressed ``none`` codec."""

    name: str = "none"
    flag: int = 0
    # compress() calls on different threads run in parallel (the work is done without the GIL).
    concurrent: bool = False

    def compress(self, pages: Sequence[Page]) -> Sequence[Page]:
        """One blob per page, in order; the caller stores a page raw if its blob is not smaller."""
        return pages

    def decompress(self, blob: bytes, page_size: int) -> bytes:
        raise CodecError(f"{self.name}: pages are stored uncompressed")


class ZlibCodec(Codec):
    """zlib format at level 1 (makedumpfile uses ``compress2(…, Z_BEST_SPEED)``)."""

    name = "zlib"
    flag = FLAG_ZLIB
    concurrent = True

    def compress(self, pages: Sequence[Page]) -> Sequence[Page]:
        return [zlib.compress(page, 1) for page in pages]

    def decompress(self, blob: bytes, page_size: int) -> bytes:
        try:
            out = zlib.decompress(blob, bufsize=page_size)
        except zlib.error as exc:
            raise CodecError(f"zlib: corrupt page: {exc}") from exc
        return _check_size(self.name, out, page_size)


class LzoCodec(Codec):
    """Raw LZO1X-1 (no python-lzo header), as makedumpfile's ``lzo1x_1_compress`` writes it."""

    name = "lzo"
    flag = FLAG_LZO

    def __init__(self) -> None:
        try:
            import lzo
        except ImportError as exc:
            raise CodecError("lzo: the python-lzo module is not installed") from exc
        self._lzo = lzo

    def compress(self, pages: Sequence[Page]) -> Sequence[Page]:
        # python-lzo holds the GIL, so threads would only add overhead; LZO is fast on one core.
        compress = self._lzo.compress
        return [compress(bytes(p), 1, False) for p in pages]

    def decompress(self, blob: bytes, page_size: int) -> bytes:
        try:
            out: bytes = self._lzo.decompress(blob, False, page_size)
        except self._lzo.error as exc:
            raise CodecError(f"lzo: corrupt page: {exc}") from exc
        return _check_size(self.name, out, page_size)


class ZstdCodec(Codec):
    """zstd level 1, one standard frame per page.

    ``multi_compress_to_buffer`` compresses a chunk in C without the GIL; builds without it
    (Debian 12's python3-zstandard, the CFFI backend) make one ``compress()`` call per page.
    A ``ZstdCompressor`` must not be used by two threads at once (it crashes), so each thread
    has its own.
    """

    name = "zstd"
    flag = FLAG_ZSTD

    def __init__(self) -> None:
        try:
            import zstandard
        except ImportError as exc:
            raise CodecError("zstd: the zstandard module is not installed") from exc
        self._batch_api = hasattr(zstandard.ZstdCompressor, "multi_compress_to_buffer")
        # One compress() per 4 KiB page takes the GIL back so often that worker threads only
        # slow it down: without the batch API one thread compresses everything.
        self.concurrent = self._batch_api
        self._zstd = zstandard
        self._local = threading.local()
        self._decompressor = zstandard.ZstdDecompressor()

    def compress(self, pages: Sequence[Page]) -> Sequence[Page]:
        compressor = getattr(self._local, "compressor", None)
        if compressor is None:
            compressor = self._local.compressor = self._zstd.ZstdCompressor(level=1)
        if self._batch_api and pages:  # it rejects an empty list
            try:
                result = compressor.multi_compress_to_buffer(list(pages), threads=0)
            except NotImplementedError:
                self._batch_api = False
            else:
                # A BufferSegment exports the buffer protocol; the stubs do not say so.
                return [memoryview(result[i]) for i in range(len(pages))]  # type: ignore[arg-type]
        return [compressor.compress(p) for p in pages]

    def decompress(self, blob: bytes, page_size: int) -> bytes:
        try:
            # decompress() allocates what the frame header claims: a corrupt one must not
            # make it allocate more than a page.
            claimed = self._zstd.frame_content_size(blob)
            if claimed > page_size:
                raise CodecError(f"zstd: a page's frame claims {claimed} bytes")
            out: bytes = self._decompressor.decompress(blob, max_output_size=page_size)
        except self._zstd.ZstdError as exc:
            raise CodecError(f"zstd: corrupt page: {exc}") from exc
        return _check_size(self.name, out, page_size)


def _check_size(name: str, out: bytes, page_size: int) -> bytes:
    if len(out) != page_size:
        raise CodecError(f"{name}: page decompressed to {len(out)} bytes, expected {page_size}")
    return out


CODECS: Final[dict[str, type[Codec]]] = {
    "zstd": ZstdCodec,
    "zlib": ZlibCodec,
    "lzo": LzoCodec,
    "none": Codec,
}


def codec_by_name(name: str) -> Codec:
    try:
        cls = CODECS[name]
    except KeyError:
        raise CodecError(f"unknown compression {name!r} (known: {', '.join(CODECS)})") from None
    return cls()


def codec_for_flag(flag: int) -> Codec:
    """The codec that reads pages stored with descriptor/header flag ``flag`` (0 = raw)."""
    for cls in CODECS.values():
        if cls.flag == flag:
            return cls()
    if flag == FLAG_SNAPPY:
        raise CodecError("snappy-compressed pages are not supported")
    raise CodecError(f"unknown page compression flag 0x{flag:x}")
