"""What a crashed kernel's VMCOREINFO lets us decide about a page, era by era.

makedumpfile's tests (``__exclude_unnecessary_pages`` and its predicates, 1.7.9) select their
encoding by which VMCOREINFO keys exist, not by kernel version, except for the width of
``compound_order``/``compound_dtor`` before 4.16. This module turns the keys into one
:class:`PageRules` value: struct page field offsets, flag bits, the ``page_type`` values to
compare (exactly, on the raw 32-bit word), and how to find a compound page's order and whether
it is hugetlb. Dump-level bits whose keys are missing are listed with the key that is missing,
so the caller can say so and drop them instead of guessing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kdumpd.vmcore.vmcoreinfo import Vmcoreinfo

DL_ZERO, DL_CACHE, DL_CACHE_PRIVATE, DL_USER, DL_FREE = 1, 2, 4, 8, 16
_U32 = 0xFFFFFFFF


@dataclass(frozen=True)
class FieldAt:
    """A little-endian unsigned field of ``width`` bytes at ``offset`` in a struct page."""

    offset: int
    width: int


@dataclass(frozen=True)
class CompoundRule:
    """How the order and hugetlb-ness of a compound head are read from its first tail page.

    ``kind``: "flags_1" (6.6+: order in the low byte of page[1].flags; hugetlb from the head's
    page_type (6.9+) or from PG_hugetlb in page[1].flags (6.6-6.8)), "fields" (order and dtor
    as struct fields of page[1], ≤ 6.5), or "none" (the order cannot be found: order 0).
    """

    kind: str
    order: FieldAt | None = None
    dtor: FieldAt | None = None
    hugetlb_dtor: int | None = None  # NUMBER(HUGETLB_PAGE_DTOR) or SYMBOL(free_huge_page)
    hugetlb_mapcount: int | None = None  # PAGE_HUGETLB_MAPCOUNT_VALUE (6.9+), 32-bit
    pg_hugetlb: int | None = None  # NUMBER(PG_hugetlb) (6.6-6.8)


@dataclass(frozen=True)
class PageRules:
    flags: int
    mapping: int
    mapcount: int | None
    private: int | None
    compound_head: int | None
    head_mask: int
    pg_lru: int | None
    pg_private: int | None
    pg_swapcache: int | None
    pg_swapbacked: int | None
    pg_slab: int | None
    pg_hwpoison: int | None
    pg_buddy: int | None
    buddy_mapcount: int | None
    slab_mapcount: int | None
    offline_mapcount: int | None
    unaccepted_mapcount: int | None
    max_order: int | None  # LENGTH(zone.free_area)
    compound: CompoundRule
    # dump-level bit → why it cannot be decided (the missing key); absent bits are decidable
    undecidable: dict[int, str] = field(default_factory=dict)

    @property
    def buddy_test(self) -> bool:
        return self.private is not None and (
            (self.buddy_mapcount is not None and self.mapcount is not None)
            or self.pg_buddy is not None
        )

    def needs_scan(self, level: int) -> bool:
        """Whether makedumpfile walks the struct pages for ``level`` (create_2nd_bitmap)."""
        return bool(
            level & (DL_CACHE | DL_CACHE_PRIVATE | DL_USER)
            or self.pg_hwpoison is not None
            or (level & DL_FREE and self.buddy_test)
        )


def kernel_version(osrelease: str) -> tuple[int, int, int]:
    """(major, minor, patch) from a release such as ``6.1.0-56-amd64``; missing parts are 0."""
    parts = [int(p) for p in re.findall(r"\d+", osrelease)[:3]]
    parts += [0] * (3 - len(parts))
    return parts[0], parts[1], parts[2]


def page_rules(info: Vmcoreinfo) -> PageRules:
    """The rules for this kernel. Raises nothing: what is missing shows in ``undecidable``."""
    num, off = info.number, info.offset
    undecidable: dict[int, str] = {}
    mapping = off("page.mapping")
    flags = off("page.flags")
    for bit in (DL_CACHE, DL_CACHE_PRIVATE):
        for key in ("PG_lru", "PG_private", "PG_swapcache"):
            if num(key) is None and bit not in undecidable:
                undecidable[bit] = f"NUMBER({key})"
    mapcount = off("page._mapcount")
    private = off("page.private")
    buddy = num("PAGE_BUDDY_MAPCOUNT_VALUE")
    if private is None:
        undecidable[DL_FREE] = "OFFSET(page.private)"
    elif (buddy is None or mapcount is None) and num("PG_buddy") is None:
        # makedumpfile would walk the zones' free lists here; that path is not implemented.
        undecidable[DL_FREE] = (
            "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"
            if mapcount is not None
            else "OFFSET(page._mapcount)"
        )
    head_mask = num("PG_head_mask")
    return PageRules(
        flags=flags or 0,
        mapping=mapping or 0,
        mapcount=mapcount,
        private=private,
        compound_head=off("page.compound_head"),
        head_mask=(head_mask or 0) & ((1 << 64) - 1),
        pg_lru=num("PG_lru"),
        pg_private=num("PG_private"),
        pg_swapcache=num("PG_swapcache"),
        pg_swapbacked=num("PG_swapbacked"),
        pg_slab=num("PG_slab"),
        pg_hwpoison=num("PG_hwpoison"),
        pg_buddy=num("PG_buddy"),
        buddy_mapcount=_u32(buddy),
        slab_mapcount=_u32(num("PAGE_SLAB_MAPCOUNT_VALUE")),
        offline_mapcount=_u32(num("PAGE_OFFLINE_MAPCOUNT_VALUE")),
        unaccepted_mapcount=_u32(num("PAGE_UNACCEPTED_MAPCOUNT_VALUE")),
        max_order=info.length("zone.free_area"),
        compound=_compound_rule(info) if head_mask is not None else CompoundRule("none"),
        undecidable=undecidable,
    )


def _compound_rule(info: Vmcoreinfo) -> CompoundRule:
    num, off = info.number, info.offset
    hugetlb_mapcount = _u32(num("PAGE_HUGETLB_MAPCOUNT_VALUE"))
    if hugetlb_mapcount is not None:
        return CompoundRule("flags_1", hugetlb_mapcount=hugetlb_mapcount)
    if num("PG_hugetlb") is not None:
        return CompoundRule("flags_1", pg_hugetlb=num("PG_hugetlb"))
    version = kernel_version(info.osrelease)
    page_size = info.size("page") or 0
    if off("folio._folio_order") is not None:
        order_at: int | None = (off("folio._folio_order") or 0) - page_size
    elif off("page.compound_order") is not None:
        order_at = off("page.compound_order")
    elif version < (4, 4, 0) and off("page.lru") is not None:
        order_at = (off("page.lru") or 0) + (off("list_head.prev") or 0)
    else:
        order_at = None
    if off("folio._folio_dtor") is not None:
        dtor_at: int | None = (off("folio._folio_dtor") or 0) - page_size
    elif off("page.compound_dtor") is not None:
        dtor_at = off("page.compound_dtor")
    elif version < (4, 4, 0) and off("page.lru") is not None:
        dtor_at = (off("page.lru") or 0) + (off("list_head.next") or 0)
    else:
        dtor_at = None
    # Widths changed twice: u8 since 4.16, u16 for 4.4-4.15, and before 4.4 an lru word.
    if version >= (4, 16, 0):
        order_width, dtor_width = 1, 1
    elif version >= (4, 4, 0):
        order_width, dtor_width = 2, 2
    else:
        order_width, dtor_width = 2, 8
    # makedumpfile treats offset 0 as "unknown" (its sentinel), so do we.
    return CompoundRule(
        "fields",
        order=FieldAt(order_at, order_width) if order_at else None,
        dtor=FieldAt(dtor_at, dtor_width) if dtor_at else None,
        hugetlb_dtor=_hugetlb_dtor(info),
    )


def _hugetlb_dtor(info: Vmcoreinfo) -> int | None:
    value = info.number("HUGETLB_PAGE_DTOR")
    return value if value is not None else info.symbol("free_huge_page")


def _u32(value: int | None) -> int | None:
    """``page_type``/``_mapcount`` values are compared on their raw 32-bit pattern."""
    return None if value is None else value & _U32
