"""Where the ``struct page`` of every pfn lives: SPARSEMEM (+EXTREME, +VMEMMAP) and FLATMEM.

The result is a list of :class:`MemMapRange`, one per memory section (or one for FLATMEM), in
the order and with the bounds makedumpfile's ``get_mem_map`` builds them, because the page
classifier must walk the pfns exactly as makedumpfile does to reach identical bitmaps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from kdumpd.vmcore.errors import AddressError, VmcoreError, VmcoreinfoMissingError
from kdumpd.vmcore.vmcoreinfo import Vmcoreinfo

SECTION_MARKED_PRESENT = 1
# makedumpfile masks the low 5 flag bits (SECTION_MAP_LAST_BIT = 1 << 5 since Linux 4.13).
SECTION_MAP_MASK = ~((1 << 5) - 1) & ((1 << 64) - 1)
KERNEL_HALF = 0xFFFF800000000000  # x86_64: every kernel virtual address is above this
_U64 = (1 << 64) - 1


class VirtReader(Protocol):
    def read_virt(self, vaddr: int, size: int) -> bytes: ...


@dataclass(frozen=True)
class MemMapRange:
    """pfns ``[start_pfn, end_pfn)`` whose struct pages start at kernel virtual ``mem_map``."""

    start_pfn: int
    end_pfn: int
    mem_map: int


@dataclass(frozen=True)
class MemoryModel:
    kind: str  # "SPARSEMEM_EX", "SPARSEMEM" or "FLATMEM"
    ranges: list[MemMapRange]
    page_struct_size: int
    section_pages: int = 0  # pfns per memory section; 0 for FLATMEM (one range)

    def max_pfn(self, max_mapnr: int) -> int:
        """makedumpfile's clamp of max_mapnr to the last pfn that has a mem_map (``mem=``)."""
        ends = [r.end_pfn for r in self.ranges]
        return min(max_mapnr, max(ends)) if ends else max_mapnr


def locate_mem_map(mem: VirtReader, info: Vmcoreinfo, max_mapnr: int) -> MemoryModel:
    """Find the mem_map of every section up to ``max_mapnr``."""
    purpose = "finding struct page (memory model)"
    page_struct = info.require("SIZE", "page", purpose)
    for key in ("page.flags", "page.mapping"):
        info.require("OFFSET", key, purpose)
    if info.offset("page._refcount") is None and info.offset("page._count") is None:
        raise VmcoreinfoMissingError(
            f"VMCOREINFO lacks OFFSET(page._refcount), needed for {purpose}"
        )
    section_keys = (
        info.symbol("mem_section"),
        info.size("mem_section"),
        info.offset("mem_section.section_mem_map"),
    )
    if None not in section_keys:
        return _sparsemem(mem, info, max_mapnr, page_struct)
    mem_map_symbol = info.symbol("mem_map")
    if mem_map_symbol is not None:
        mem_map = _u64(mem, mem_map_symbol)
        if not mem_map:
            raise VmcoreError("FLATMEM: the kernel's mem_map pointer is NULL")
        return MemoryModel("FLATMEM", [MemMapRange(0, max_mapnr, mem_map)], page_struct)
    raise VmcoreinfoMissingError(
        "VMCOREINFO lacks SYMBOL(mem_section) and SYMBOL(mem_map), needed for " + purpose
    )


def _sparsemem(mem: VirtReader, info: Vmcoreinfo, max_mapnr: int, page_struct: int) -> MemoryModel:
    page_shift = info.page_size.bit_length() - 1
    section_bits = info.number("SECTION_SIZE_BITS") or 27
    l5 = info.number("pgtable_l5_enabled") == 1
    physmem_bits = info.number("MAX_PHYSMEM_BITS") or (52 if l5 else 46)
    if not page_shift < section_bits < physmem_bits <= 64:
        raise VmcoreError(
            f"VMCOREINFO SECTION_SIZE_BITS={section_bits} MAX_PHYSMEM_BITS={physmem_bits} "
            "are inconsistent"
        )
    section_size = info.size("mem_section") or 0
    map_offset = info.offset("mem_section.section_mem_map") or 0
    symbol = info.symbol("mem_section") or 0
    pages_per_section = 1 << (section_bits - page_shift)
    nr_sections = 1 << (physmem_bits - section_bits)
    per_root = info.page_size // section_size if section_size else 0
    length = info.length("mem_section")
    extreme = per_root > 0 and (length is None or length == -(-nr_sections // per_root))
    num_section = min(-(-max_mapnr // pages_per_section), nr_sections)
    layout = _Sections(mem, section_size, map_offset, pages_per_section, page_struct)
    if extreme:
        # SYMBOL(mem_section) is the root array (the pointer's value, since 4.15); when taken
        # from an older source it is the pointer's address, so makedumpfile retries once.
        maps = layout.valid(layout.extreme(symbol, per_root, num_section))
        if maps is None:
            maps = layout.valid(layout.extreme(_u64(mem, symbol), per_root, num_section))
        kind = "SPARSEMEM_EX"
    else:
        maps = layout.valid(layout.flat(symbol, num_section))
        kind = "SPARSEMEM"
    if maps is None:
        raise VmcoreError("could not validate mem_section: no section with a valid mem_map")
    ranges = [
        MemMapRange(nr * pages_per_section, min((nr + 1) * pages_per_section, max_mapnr), m)
        for nr, m in enumerate(maps)
        if m is not None
    ]
    return MemoryModel(kind, ranges, page_struct, pages_per_section)


@dataclass(frozen=True)
class _Sections:
    mem: VirtReader
    size: int
    map_offset: int
    pages_per_section: int
    page_struct: int

    def extreme(self, roots_addr: int, per_root: int, num_section: int) -> list[int | None]:
        nroots = -(-num_section // per_root)
        try:
            roots = np.frombuffer(self.mem.read_virt(roots_addr, nroots * 8), dtype="<u8")
        except AddressError:
            return [None] * num_section
        maps: list[int | None] = []
        for r, root in enumerate(roots.tolist()):
            count = min(per_root, num_section - r * per_root)
            if root == 0:
                maps.extend([None] * count)
                continue
            maps.extend(self._decode(root, r * per_root, count))
        return maps

    @staticmethod
    def valid(maps: list[int | None]) -> list[int | None] | None:
        """makedumpfile's validation: some section is present and every mem_map is a kernel
        address; otherwise this reading of SYMBOL(mem_section) is wrong."""
        present = [m for m in maps if m is not None]
        if not present or any(m < KERNEL_HALF for m in present):
            return None
        return maps

    def flat(self, base: int, num_section: int) -> list[int | None]:
        return self._decode(base, 0, num_section)

    def _decode(self, addr: int, first_nr: int, count: int) -> list[int | None]:
        """mem_map address of sections ``first_nr …`` whose structs start at ``addr``."""
        try:
            raw = self.mem.read_virt(addr, count * self.size)
        except AddressError:
            return [None] * count
        coded = np.frombuffer(raw, dtype=np.uint8).reshape(count, self.size)
        words = coded[:, self.map_offset : self.map_offset + 8].copy().view("<u8").ravel()
        out: list[int | None] = []
        for i, word in enumerate(words.tolist()):
            if not word & SECTION_MARKED_PRESENT:
                out.append(None)
                continue
            # The kernel stores mem_map minus the section's first pfn (in struct pages).
            nr = first_nr + i
            offset = nr * self.pages_per_section * self.page_struct
            out.append(((word & SECTION_MAP_MASK) + offset) & _U64)
        return out


def _u64(mem: VirtReader, vaddr: int) -> int:
    return int.from_bytes(mem.read_virt(vaddr, 8), "little")
