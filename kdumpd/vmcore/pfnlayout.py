"""Which pfns a dump input has, in the three senses makedumpfile uses.

* ``present``: bitmap 1, the RAM the input describes;
* ``data``: where bitmap 2 starts, the pages the input actually holds (an ELF PT_LOAD's pages
  past ``p_filesz`` are cleared, makedumpfile's ``exclude_nodata_pages``);
* ``scan``: pfns whose struct page the classifier examines (makedumpfile's ``is_in_segs``: the
  page's first byte has file data).

All three are sorted, disjoint ``[start_pfn, end_pfn)`` ranges, so nothing here is per pfn.
"""

from __future__ import annotations

from dataclasses import dataclass

from kdumpd.vmcore.elf import ElfVmcore, makedumpfile_single_cycle
from kdumpd.vmcore.ranges import Ranges, bitmap_ranges, merge, subtract
from kdumpd.vmcore.source import DumpSource


@dataclass(frozen=True)
class PfnLayout:
    max_mapnr: int
    present: Ranges
    data: Ranges
    scan: Ranges
    original: int  # makedumpfile's "Original pages"


def layout_of(source: DumpSource) -> PfnLayout:
    if isinstance(source, ElfVmcore):
        ps = source.page_size
        whole = makedumpfile_single_cycle(source.max_mapnr)
        present = source.present_ranges(partial_tail=whole)
        nodata = merge(
            [((s.paddr + s.filesz) // ps, -(-(s.paddr + s.memsz) // ps)) for s in source.loads]
        )
        scan = merge([(-(-lo // ps), -(-hi // ps)) for lo, hi in source.backed_extents()])
        data = subtract(present, nodata)
        return PfnLayout(source.max_mapnr, present, data, scan, source.original_pages(whole))
    # Other inputs (a kdump-compressed file being re-filtered) only know which pages they hold;
    # makedumpfile then tests is_in_segs against that bitmap too.
    held = bitmap_ranges(source.present_bitmap())
    return PfnLayout(source.max_mapnr, held, held, held, sum(hi - lo for lo, hi in held))
