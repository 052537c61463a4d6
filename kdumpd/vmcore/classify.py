"""The page classifier: which pfns a dump of level 0-31 keeps, decided as makedumpfile does.

makedumpfile walks every section's struct pages pfn by pfn (``__exclude_unnecessary_pages``).
Here the same walk is done a chunk of pfns at a time with numpy: struct pages are read in bulk,
every field is decoded as a column, the decision chain is a vector of classes, and only the
part that is sequential by nature (an excluded compound page or buddy block makes the walk jump
past its pages) is resolved over the few multi-page candidates. Memory stays bounded by the
chunk size; only the bitmaps grow with the machine.

Details that keep the result bit-identical to makedumpfile:

* struct pages are read in batches of 512 (PGMM_CACHED) starting at the first examined pfn of a
  batch, and a compound head at the last slot of a batch gets order 0 (page[1] is not read);
* the walk restarts at each section; an exclusion may run past the section's end, clearing
  (and counting) pfns there that the next section then examines again;
* every pfn of an excluded range is counted, also pfns that are holes;
* ``page_type``/``_mapcount`` values are compared on the raw 32-bit word;
* flag tests mimic makedumpfile's ``test_bit`` (bit ``nr & 31`` of an int mask).

Zero pages (level bit 1) are not decided here: they need the page contents, which the writer
reads anyway; :func:`zero_pages` tests a batch of them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from kdumpd.vmcore.elf import ElfVmcore, kernel_text_load
from kdumpd.vmcore.errors import VmcoreError
from kdumpd.vmcore.mm import MemMapRange, MemoryModel, locate_mem_map
from kdumpd.vmcore.pagerules import (
    DL_CACHE,
    DL_CACHE_PRIVATE,
    DL_FREE,
    DL_USER,
    DL_ZERO,
    PageRules,
    page_rules,
)
from kdumpd.vmcore.pfnlayout import PfnLayout, layout_of
from kdumpd.vmcore.ranges import mask
from kdumpd.vmcore.source import DumpSource
from kdumpd.vmcore.vmcoreinfo import Vmcoreinfo, parse_vmcoreinfo
from kdumpd.vmcore.x86_64 import X86_64

BoolArray = npt.NDArray[np.bool_]
PGMM_CACHED = 512
# 1 MiB of struct pages.  Per-chunk costs are dozens of numpy calls: 8 Ki pfns took 2.5 times
# the CPU of 16 Ki on a 12 GB vmcore.  The temporaries (a few MiB) are freed before the copy
# starts, whose buffers set the peak RSS.
DEFAULT_CHUNK_PAGES = 1 << 14
LEVEL_NAMES = {
    DL_ZERO: "zero pages",
    DL_CACHE: "non-private cache pages",
    DL_CACHE_PRIVATE: "private cache pages",
    DL_USER: "user process data pages",
    DL_FREE: "free pages",
}
# Classes of the decision chain, in makedumpfile's order; KEEP is "not excluded".
KEEP, FREE, CACHE, CACHE_PRIVATE, USER, HWPOISON, OFFLINE = range(7)
MAX_REPORTED_ORDERS = 1000  # garbage struct pages must not grow the warning list without bound
COUNTER_NAMES = ("", "free", "cache", "cache_private", "user", "hwpoison", "offline")


@dataclass
class PageCounts:
    """makedumpfile's per-category counters (``--show-stats``)."""

    zero: int = 0
    cache: int = 0
    cache_private: int = 0
    user: int = 0
    free: int = 0
    hwpoison: int = 0
    offline: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))

    @property
    def excluded(self) -> int:
        return sum(vars(self).values())


@dataclass(frozen=True)
class Chunk:
    """Decisions for pfns ``[start_pfn, start_pfn + len(dumpable))``.

    ``present`` is bitmap 1, ``dumpable`` bitmap 2 before zero-page detection.
    """

    start_pfn: int
    present: BoolArray
    dumpable: BoolArray


@dataclass
class Classifier:
    """One dump level applied to one input. :meth:`chunks` may be iterated more than once
    (a writer needs the number of dumpable pages before the first page); each pass resets and
    recounts :attr:`counts`."""

    source: DumpSource
    requested_level: int
    level: int
    layout: PfnLayout
    max_mapnr: int
    warnings: list[str]
    rules: PageRules | None
    model: MemoryModel | None
    translator: X86_64 | None
    chunk_pages: int = DEFAULT_CHUNK_PAGES
    counts: PageCounts = field(default_factory=PageCounts)
    # (pfn, order) of buddy pages whose order is not below LENGTH(zone.free_area): they are
    # kept, and makedumpfile prints "WARNING: Invalid free page order: ..." for each.
    invalid_orders: list[tuple[int, int]] = field(default_factory=list)

    def chunks(self) -> Iterator[Chunk]:
        """Decisions in pfn order. Chunks without any present pfn (holes) are left out: their
        bits are zero in both bitmaps."""
        self.counts = PageCounts()
        self.invalid_orders = []
        walk = _Walk(self)
        size = self.chunk_pages
        for lo, hi in self.layout.present:
            first = max(lo - lo % size, walk.next_chunk)
            for start in range(first, min(hi, self.max_mapnr), size):
                yield walk.chunk(start, min(start + size, self.max_mapnr))
                walk.next_chunk = start + size

    def bitmaps(
        self, progress: Callable[[int], None] | None = None
    ) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
        """Packed bitmap 1 and bitmap 2 (zero pages still set), one pass; ``progress`` is given
        the pfn reached after each chunk."""
        nbytes = (self.max_mapnr + 7) // 8
        bitmap1 = np.zeros(nbytes, dtype=np.uint8)
        bitmap2 = np.zeros(nbytes, dtype=np.uint8)
        for chunk in self.chunks():
            # chunk_pages is a multiple of 8, so every chunk starts on a byte.
            lo = chunk.start_pfn // 8
            packed1 = np.packbits(chunk.present, bitorder="little")
            bitmap1[lo : lo + len(packed1)] = packed1
            bitmap2[lo : lo + len(packed1)] = np.packbits(chunk.dumpable, bitorder="little")
            if progress is not None:
                progress(chunk.start_pfn + len(chunk.present))
        return bitmap1, bitmap2


def classifier(
    source: DumpSource, level: int, chunk_pages: int = DEFAULT_CHUNK_PAGES
) -> Classifier:
    """Prepare the classifier; what VMCOREINFO cannot decide is dropped from the level with a
    warning naming the missing key, never guessed."""
    if not 0 <= level <= 31:
        raise VmcoreError(f"dump level {level} is not in 0..31")
    if chunk_pages % PGMM_CACHED or chunk_pages <= 0:
        raise VmcoreError(f"chunk of {chunk_pages} pages is not a multiple of {PGMM_CACHED}")
    layout = layout_of(source)
    warnings: list[str] = []
    effective = level
    rules: PageRules | None = None
    model: MemoryModel | None = None
    translator: X86_64 | None = None
    raw = source.vmcoreinfo_raw
    info: Vmcoreinfo | None = None
    if raw is not None:
        info = source.vmcoreinfo if isinstance(source, ElfVmcore) else parse_vmcoreinfo(raw)
    if info is None:
        why = "the input has no VMCOREINFO"
    else:
        rules = page_rules(info)
        try:
            translator = X86_64(source, info, kernel_text_load(source))
            model = locate_mem_map(translator, info, layout.max_mapnr)
            why = ""
        except VmcoreError as exc:  # a missing key or unreadable mem_section
            why = str(exc)
            rules = None
    for bit in (DL_CACHE, DL_CACHE_PRIVATE, DL_USER, DL_FREE):
        if not level & bit:
            continue
        missing = why or (rules.undecidable.get(bit, "") if rules else "")
        if missing:
            effective &= ~bit
            reason = missing if why else f"VMCOREINFO lacks {missing}"
            warnings.append(
                f"-d {level}: {LEVEL_NAMES[bit]} cannot be told apart ({reason}); they are kept"
            )
    if rules is None and why and not warnings:
        warnings.append(f"hwpoison and offline pages cannot be found ({why}); they are kept")
    max_mapnr = model.max_pfn(layout.max_mapnr) if model else layout.max_mapnr
    return Classifier(
        source=source,
        requested_level=level,
        level=effective,
        layout=layout,
        max_mapnr=max_mapnr,
        warnings=warnings,
        rules=rules,
        model=model,
        translator=translator,
        chunk_pages=_fit_chunk(chunk_pages, model),
    )


def zero_pages(data: bytes | memoryview | npt.NDArray[np.uint8], page_size: int) -> BoolArray:
    """Which of the consecutive whole pages in ``data`` are entirely zero (one flag a page)."""
    words = np.frombuffer(data, dtype=np.uint64).reshape(-1, page_size // 8)
    # max() reduces the words as they are; any() would first cast each to a bool.
    zero: BoolArray = words.max(axis=1, initial=0) == 0
    return zero


def _fit_chunk(chunk_pages: int, model: MemoryModel | None) -> int:
    """Chunks must not straddle sections, whose starts are multiples of their size."""
    if model is None or not model.section_pages:
        return chunk_pages
    while chunk_pages > model.section_pages or model.section_pages % chunk_pages:
        chunk_pages //= 2
    return max(chunk_pages, PGMM_CACHED)


class _Walk:
    """State of one pass: exclusions that run past the current chunk."""

    def __init__(self, cls: Classifier) -> None:
        self.c = cls
        self.clear_until = 0  # pfns below this are cleared (an earlier range ran past its chunk)
        self.skip_until = 0  # pfns below this are not examined (same section only)
        self.section: MemMapRange | None = None  # the section being walked
        self.next_chunk = 0  # first pfn not yet handed out
        starts = [r.start_pfn for r in cls.model.ranges] if cls.model else []
        self.range_starts = starts

    def chunk(self, lo: int, hi: int) -> Chunk:
        c = self.c
        present = mask(c.layout.present, lo, hi)
        dumpable = present & mask(c.layout.data, lo, hi)
        if self.clear_until > lo:
            dumpable[: self.clear_until - lo] = False
        mem_range = self._range_for(lo)
        if mem_range is not None and c.rules is not None and c.rules.needs_scan(c.level):
            a, b = max(lo, mem_range.start_pfn), min(hi, mem_range.end_pfn)
            if a < b:
                if mem_range is not self.section:
                    self.section = mem_range
                    self.skip_until = a  # makedumpfile restarts its walk at each section
                self._scan(mem_range, a, b, dumpable[a - lo : b - lo])
        return Chunk(lo, present, dumpable)

    def _range_for(self, pfn: int) -> MemMapRange | None:
        model = self.c.model
        if model is None:
            return None
        i = bisect.bisect_right(self.range_starts, pfn) - 1
        if i < 0:
            return None
        r = model.ranges[i]
        return r if pfn < r.end_pfn else None

    def _scan(self, mem_range: MemMapRange, a: int, b: int, dumpable: BoolArray) -> None:
        c = self.c
        rules = c.rules
        assert rules is not None and c.translator is not None and c.model is not None
        examined = mask(c.layout.scan, a, b)
        if self.skip_until > a:
            examined[: self.skip_until - a] = False
        if not examined.any():
            return
        size = c.model.page_struct_size
        try:
            raw, was_read = _read_struct_pages(c.translator, mem_range, a, b, size, examined)
        except VmcoreError as exc:
            raise VmcoreError(f"struct pages of pfns {a:#x}-{b - 1:#x}: {exc}") from None
        pages = _Fields(raw, b - a, size)
        pfns = np.arange(a, b, dtype=np.int64)
        cls, nr_order = _decide(rules, c.level, pages, pfns, was_read)
        cls[~examined] = KEEP
        bad = cls == -1
        if bad.any():
            room = MAX_REPORTED_ORDERS - len(c.invalid_orders)
            orders = pages.u64(rules.private)[bad][:room].tolist()
            c.invalid_orders += zip(pfns[bad][:room].tolist(), orders, strict=True)
            cls[bad] = KEEP
        cand = np.flatnonzero(cls != KEEP)
        if not len(cand):
            return
        starts = pfns[cand]
        orders = nr_order[cand]
        ends = np.where(orders >= 63, c.max_mapnr, starts + (np.int64(1) << np.minimum(orders, 62)))
        ends = np.minimum(ends, c.max_mapnr)
        keep = _resolve_jumps(starts, ends)
        starts, ends, classes = starts[keep], ends[keep], cls[cand][keep]
        # The classes present (small non-negative codes); np.unique would import numpy.ma.
        for klass in np.flatnonzero(np.bincount(classes)).tolist():
            n = int((ends - starts)[classes == klass].sum())
            name = COUNTER_NAMES[klass]
            setattr(c.counts, name, getattr(c.counts, name) + n)
        # Clear the ranges: inside this chunk directly, past it through clear_until.
        # The kept ranges are disjoint and sorted, so no index repeats among starts or ends.
        cover = np.zeros(b - a + 1, dtype=np.int32)
        cover[starts - a] += 1
        cover[np.minimum(ends, b) - a] -= 1
        dumpable &= np.cumsum(cover[:-1]) == 0
        last = int(ends.max())
        self.clear_until = max(self.clear_until, last)
        self.skip_until = max(self.skip_until, min(last, mem_range.end_pfn))


def _resolve_jumps(starts: npt.NDArray[np.int64], ends: npt.NDArray[np.int64]) -> BoolArray:
    """Which candidates the sequential walk reaches: one inside an earlier excluded range is
    jumped over. Candidates are in pfn order; usually none overlap and no loop is needed."""
    reach = np.maximum.accumulate(ends)
    if len(starts) < 2 or bool(np.all(starts[1:] >= reach[:-1])):
        return np.ones(len(starts), dtype=bool)
    keep = np.zeros(len(starts), dtype=bool)
    until = -1
    for i, (s, e) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
        if s >= until:
            keep[i] = True
            until = e
    return keep


class _Fields:
    """Columns of an array of struct pages."""

    def __init__(self, raw: bytes | bytearray, count: int, size: int) -> None:
        self.raw, self.count, self.size = raw, count, size

    def column(self, offset: int, dtype: str) -> npt.NDArray[np.generic]:
        return np.ndarray(
            (self.count,), dtype=dtype, buffer=self.raw, offset=offset, strides=(self.size,)
        )

    def u64(self, offset: int | None) -> npt.NDArray[np.uint64]:
        if offset is None:
            return np.zeros(self.count, dtype=np.uint64)
        return self.column(offset, "<u8").astype(np.uint64)

    def u32(self, offset: int | None) -> npt.NDArray[np.uint32]:
        if offset is None:
            return np.zeros(self.count, dtype=np.uint32)
        return self.column(offset, "<u4").astype(np.uint32)

    def at(self, index: npt.NDArray[np.int64], offset: int, width: int) -> npt.NDArray[np.uint64]:
        """A field of the struct pages at ``index``."""
        dtype = {1: "u1", 2: "<u2", 4: "<u4", 8: "<u8"}[width]
        return self.column(offset, dtype)[index].astype(np.uint64)


def _test_bit(flags: npt.NDArray[np.uint64], nr: int | None) -> BoolArray:
    """makedumpfile's ``test_bit``: an int mask ``1 << (nr & 31)``, sign-extended for bit 31."""
    if nr is None:
        return np.zeros(len(flags), dtype=bool)
    bit = nr & 31
    m = 0xFFFFFFFF80000000 if bit == 31 else 1 << bit
    result: BoolArray = (flags & np.uint64(m)) != 0
    return result


def _decide(
    rules: PageRules,
    level: int,
    pages: _Fields,
    pfns: npt.NDArray[np.int64],
    was_read: BoolArray,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Class of each pfn (-1: a buddy page whose order is invalid, kept) and the order of the
    range an exclusion covers (compound order, or the buddy order)."""
    n = pages.count
    flags = pages.u64(rules.flags)
    mapping = pages.u64(rules.mapping)
    mapcount = pages.u32(rules.mapcount)
    private = pages.u64(rules.private)
    head = pages.u64(rules.compound_head) if rules.compound_head is not None else None

    order, hugetlb = _compound(rules, pages, flags, mapcount, pfns, was_read)

    slab = np.zeros(n, dtype=bool)
    if rules.slab_mapcount is not None:
        slab |= mapcount == np.uint32(rules.slab_mapcount)
    if rules.pg_slab is not None:
        slab |= (flags & np.uint64(1 << (rules.pg_slab & 63))) != 0
    anon = ((mapping & np.uint64(1)) != 0) & ~slab
    private_flag = _test_bit(flags, rules.pg_private)
    cache_page = _test_bit(flags, rules.pg_lru) | (
        _test_bit(flags, rules.pg_swapcache)
        & (_test_bit(flags, rules.pg_swapbacked) if rules.pg_swapbacked is not None else True)
    )
    zeros = np.zeros(n, dtype=bool)
    if level & DL_FREE and rules.buddy_test:
        if rules.buddy_mapcount is not None and rules.mapcount is not None:
            buddy = ~slab & (mapcount == np.uint32(rules.buddy_mapcount))
        else:
            buddy = _test_bit(flags, rules.pg_buddy)
    else:
        buddy = zeros
    bad_order = buddy & (private >= np.uint64(rules.max_order)) if rules.max_order else zeros
    unaccepted = (
        mapcount == np.uint32(rules.unaccepted_mapcount)
        if level & DL_FREE and rules.unaccepted_mapcount is not None
        else zeros
    )
    cache = cache_page & ~private_flag & ~anon if level & DL_CACHE else zeros
    cache_any = cache_page & ~anon if level & DL_CACHE_PRIVATE else zeros
    user = anon | hugetlb if level & DL_USER else zeros
    hwpoison = _test_bit(flags, rules.pg_hwpoison) if rules.pg_hwpoison is not None else zeros
    offline = (
        ~slab & (mapcount == np.uint32(rules.offline_mapcount))
        if rules.offline_mapcount is not None
        else zeros
    )
    tail = (head & np.uint64(1)) != 0 if head is not None else zeros
    chain = [
        (tail, KEEP),
        (bad_order, -1),
        (buddy, FREE),
        (unaccepted, FREE),
        (cache, CACHE),
        (cache_any & private_flag, CACHE_PRIVATE),
        (cache_any, CACHE),
        (user, USER),
        (hwpoison, HWPOISON),
        (offline, OFFLINE),
    ]
    # First match wins: assign from the last test to the first; tests that cannot match
    # (the shared all-false array) are skipped.
    cls = np.full(n, KEEP, dtype=np.int64)
    for test, klass in reversed(chain):
        if test is not zeros:
            cls[test] = klass
    # Buddy blocks span 1 << private pages; unaccepted ones MAX_PAGE_ORDER blocks.
    nr_order = order
    nr_order = np.where(
        buddy & ~bad_order, np.minimum(private, np.uint64(63)).astype(np.int64), nr_order
    )
    if rules.max_order:
        nr_order = np.where(unaccepted & ~buddy, rules.max_order - 1, nr_order)
    return cls, nr_order


def _compound(
    rules: PageRules,
    pages: _Fields,
    flags: npt.NDArray[np.uint64],
    mapcount: npt.NDArray[np.uint32],
    pfns: npt.NDArray[np.int64],
    was_read: BoolArray,
) -> tuple[npt.NDArray[np.int64], BoolArray]:
    """Order and hugetlb-ness of compound heads, read from page[1] as makedumpfile does."""
    n = pages.count
    order = np.zeros(n, dtype=np.int64)
    hugetlb = np.zeros(n, dtype=bool)
    rule = rules.compound
    if rule.kind == "none":
        return order, hugetlb
    # page[1] is in makedumpfile's 512-entry cache unless the head is its last slot. Heads are
    # few, so everything below works on their indexes only.
    heads = np.flatnonzero((flags & np.uint64(rules.head_mask)) != 0)
    heads = heads[(pfns[heads] % PGMM_CACHED != PGMM_CACHED - 1) & (heads + 1 < n)]
    heads = heads[was_read[heads + 1]]
    if not len(heads):
        return order, hugetlb
    if rule.kind == "flags_1":
        flags_1 = pages.at(heads + 1, rules.flags, 8)
        head_order = flags_1 & np.uint64(0xFF)
        if rule.hugetlb_mapcount is not None:
            hugetlb[heads] = mapcount[heads] == np.uint32(rule.hugetlb_mapcount)
        elif rule.pg_hugetlb is not None:
            hugetlb[heads] = (flags_1 & np.uint64(1 << (rule.pg_hugetlb & 63))) != 0
    else:
        head_order = (
            pages.at(heads + 1, rule.order.offset, rule.order.width)
            if rule.order
            else np.zeros(len(heads), dtype=np.uint64)
        )
        if rule.dtor and rule.hugetlb_dtor is not None:
            dtor = pages.at(heads + 1, rule.dtor.offset, rule.dtor.width)
            hugetlb[heads] = dtor == np.uint64(rule.hugetlb_dtor & ((1 << 64) - 1))
    # An order that cannot be (>= 64 or a misaligned head) is taken as 0, as makedumpfile does.
    valid = head_order < np.uint64(64)
    clipped = np.where(valid, head_order, np.uint64(0)).astype(np.int64)
    valid &= (pfns[heads] & ((np.int64(1) << clipped) - 1)) == 0
    order[heads] = np.where(valid, clipped, 0)
    return order, hugetlb


def _read_struct_pages(
    mem: X86_64, r: MemMapRange, a: int, b: int, size: int, examined: BoolArray
) -> tuple[bytes | bytearray, BoolArray]:
    """Struct pages of pfns ``[a, b)``, read as makedumpfile's cache does: each 512-pfn batch
    from its first examined pfn to the batch end. Unread entries are zero."""
    n = b - a
    if examined.all():  # the usual case: one read of the whole chunk
        return mem.read_virt(r.mem_map + (a - r.start_pfn) * size, n * size), examined
    hits = np.flatnonzero(examined) + a
    group = hits // PGMM_CACHED  # sorted, as hits are
    first = np.flatnonzero(np.diff(group, prepend=-1))  # each batch's first hit
    batches = group[first]
    starts = hits[first]
    ends = np.minimum((batches + 1) * PGMM_CACHED, b)
    # A batch read from its first pfn continues the previous one's read.
    joined = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    spans = list(
        zip(
            starts[np.concatenate(([0], joined))].tolist(),
            ends[np.concatenate((joined - 1, [len(ends) - 1]))].tolist(),
            strict=True,
        )
    )
    if spans == [(a, b)]:
        return mem.read_virt(r.mem_map + (a - r.start_pfn) * size, n * size), np.ones(n, bool)
    raw = bytearray(n * size)
    was_read = np.zeros(n, dtype=bool)
    for lo, hi in spans:
        vaddr = r.mem_map + (lo - r.start_pfn) * size
        raw[(lo - a) * size : (hi - a) * size] = mem.read_virt(vaddr, (hi - lo) * size)
        was_read[lo - a : hi - a] = True
    return raw, was_read
