"""Page selection: which pfns a dump of a given level keeps (bitmap 2), before any copying.

The page classifier (kdumpd.vmcore.classify) decides per pfn as makedumpfile does; this module
packs its chunks into the two bitmaps with a progress line.  When re-filtering a kdump file,
bitmap 1 stays the original RAM (its bitmap 1) while bitmap 2 can only shrink.  Zero pages
(level bit 1) are found later, while copying.
"""

from __future__ import annotations

from collections.abc import Callable

from kdumpd.dumpfile.kdump_reader import KdumpSource
from kdumpd.dumpfile.pipeline import Selection
from kdumpd.dumpfile.progress import Progress
from kdumpd.vmcore.classify import classifier
from kdumpd.vmcore.source import DumpSource
from kdumpd.vmcore.stats import original_pages

ProgressFactory = Callable[[str], Progress]


def select_pages(source: DumpSource, dump_level: int, progress: ProgressFactory) -> Selection:
    cls = classifier(source, dump_level)
    step = progress("Excluding unnecessary pages")
    bitmap1, bitmap2 = cls.bitmaps(lambda done: step.update(done, cls.max_mapnr))
    step.update(cls.max_mapnr, cls.max_mapnr)
    if isinstance(source, KdumpSource):
        ram = source.ram_bitmap()[: len(bitmap1)]
        bitmap1[: len(ram)] = ram
    counts = cls.counts.as_dict()
    counts.pop("zero", None)
    return Selection(
        bitmap1=bitmap1,
        bitmap2=bitmap2,
        counts=counts,
        max_mapnr=cls.max_mapnr,
        original=original_pages(source, cls),
        warnings=list(cls.warnings),
        level=cls.level,
    )
