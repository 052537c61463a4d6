"""Page selection: which pfns a dump of a given level keeps (bitmap 2), before any copying.

Bitmap 1 is the input's RAM; bitmap 2 starts as the pages the input holds and loses what the
page classifier excludes for the dump level.  Zero pages (level bit 1) are found while copying.
"""

from __future__ import annotations

from collections.abc import Callable

from kdumpd.dumpfile.kdump_reader import KdumpSource
from kdumpd.dumpfile.pages import Bitmap
from kdumpd.dumpfile.pipeline import Selection
from kdumpd.dumpfile.progress import Progress
from kdumpd.errors import KdumpdError
from kdumpd.vmcore.source import DumpSource

ProgressFactory = Callable[[str], Progress]


def ram_bitmap(source: DumpSource) -> Bitmap:
    """Bitmap 1 of the output: the original RAM, also when re-filtering a kdump file."""
    if isinstance(source, KdumpSource):
        return source.ram_bitmap()
    return source.present_bitmap()


def select_pages(source: DumpSource, dump_level: int, progress: ProgressFactory) -> Selection:
    bitmap1 = ram_bitmap(source)
    bitmap2 = source.present_bitmap().copy()
    if dump_level & ~1:
        raise KdumpdError(
            f"-d {dump_level}: excluding cache, user or free pages needs the page classifier,"
            " which is not available yet; use -d 0 or -d 1"
        )
    return Selection(bitmap1, bitmap2)
