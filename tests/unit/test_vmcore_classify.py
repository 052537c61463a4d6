"""The page classifier on synthetic kernels of two eras (6.1 and 6.12 encodings).

Each test lays out a FLATMEM mem_map inside a synthetic ELF vmcore, sets struct page fields the
way the kernel does for each kind of page, and checks which pfns are dropped and how they are
counted.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdumpd.vmcore.classify import classifier
from kdumpd.vmcore.elf import ElfVmcore, makedumpfile_single_cycle
from kdumpd.vmcore.errors import VmcoreError
from kdumpd.vmcore.x86_64 import START_KERNEL_MAP
from tests.unit.vmcore_synth import Seg, build, default_notes

PAGES = 2048
MEM_MAP_PA = 0x20000  # struct pages of all 2048 pfns: 128 KiB from here
POINTER_PA = 0x1000  # the kernel variable mem_map
SIZE_PAGE = 64
OFF = {"flags": 0, "compound_head": 8, "mapping": 24, "private": 40, "mapcount": 48}
PG_LRU, PG_PRIVATE, PG_SWAPCACHE, PG_SWAPBACKED, PG_SLAB, PG_HWPOISON = 4, 13, 10, 19, 9, 23
HEAD = 1 << 16

COMMON = f"""PAGESIZE=4096
SYMBOL(mem_map)={START_KERNEL_MAP + POINTER_PA:x}
SYMBOL(init_top_pgt)={START_KERNEL_MAP + 0x3000:x}
NUMBER(phys_base)=0
SIZE(page)=64
OFFSET(page.flags)=0
OFFSET(page._refcount)=52
OFFSET(page.mapping)=24
OFFSET(page.lru)=8
OFFSET(page._mapcount)=48
OFFSET(page.private)=40
OFFSET(page.compound_head)=8
LENGTH(zone.free_area)=11
NUMBER(PG_lru)=4
NUMBER(PG_private)=13
NUMBER(PG_swapcache)=10
NUMBER(PG_swapbacked)=19
NUMBER(PG_hwpoison)=23
NUMBER(PG_head_mask)={HEAD}
"""
ERA = {
    # Debian 12: page_type as "cleared bit" values, compound fields in page[1], PG_slab.
    "6.1": {
        "vmcoreinfo": "OSRELEASE=6.1.0-test\nOFFSET(page.compound_dtor)=16\n"
        "OFFSET(page.compound_order)=17\nNUMBER(PG_slab)=9\nNUMBER(HUGETLB_PAGE_DTOR)=2\n"
        "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=-129\nNUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=-257\n",
        "buddy": -129,
        "offline": -257,
    },
    # Debian 13: one page type in the top byte, order in folio _flags_1, no PG_slab.
    "6.12": {
        "vmcoreinfo": "OSRELEASE=6.12.38+deb13-amd64\n"
        "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)=4026531840\n"
        "NUMBER(PAGE_OFFLINE_MAPCOUNT_VALUE)=4043309056\n"
        "NUMBER(PAGE_SLAB_MAPCOUNT_VALUE)=4110417920\n"
        "NUMBER(PAGE_HUGETLB_MAPCOUNT_VALUE)=4093640704\n",
        "buddy": 0xF0000000,
        "offline": 0xF1000000,
        "slab": 0xF5000000,
        "hugetlb": 0xF4000000,
    },
}


class Kernel:
    def __init__(self, era: str) -> None:
        self.era = era
        self.mem = bytearray(PAGES * 4096)
        struct.pack_into("<Q", self.mem, POINTER_PA, START_KERNEL_MAP + MEM_MAP_PA)
        for pfn in range(PAGES):
            self.set(pfn, mapcount=-1)

    def set(self, pfn: int, **fields: int) -> None:
        base = MEM_MAP_PA + pfn * SIZE_PAGE
        for name, value in fields.items():
            fmt = "<I" if name == "mapcount" else "<Q"
            mask = 0xFFFFFFFF if name == "mapcount" else (1 << 64) - 1
            struct.pack_into(fmt, self.mem, base + OFF[name], value & mask)

    def byte(self, pfn: int, offset: int, value: int) -> None:
        self.mem[MEM_MAP_PA + pfn * SIZE_PAGE + offset] = value

    def compound(self, head: int, order: int, *, hugetlb: bool = False, **fields: int) -> None:
        self.set(head, flags=fields.pop("flags", 0) | HEAD, **fields)
        for tail in range(head + 1, head + (1 << order)):
            self.set(tail, compound_head=(START_KERNEL_MAP + MEM_MAP_PA + head * 64) | 1)
        if self.era == "6.1":
            self.byte(head + 1, 17, order)
            if hugetlb:
                self.byte(head + 1, 16, 2)
        else:
            self.set(head + 1, flags=order)  # folio->_flags_1 low byte
            if hugetlb:
                self.set(head, mapcount=ERA["6.12"]["hugetlb"])

    def write(self, tmp_path: Path, extra: str = "", drop: str = "") -> Path:
        text = ERA[self.era]["vmcoreinfo"] + COMMON + extra
        if drop:
            text = "\n".join(line for line in text.splitlines() if not line.startswith(drop))
        path = tmp_path / "vmcore"
        seg = Seg(0, PAGES * 4096, data=bytes(self.mem))
        path.write_bytes(build([seg], default_notes(text.encode() + b"\n")))
        return path


def populate(k: Kernel) -> dict[str, list[int]]:
    """One page (or compound page / buddy block) of each kind; returns their pfns."""
    era = ERA[k.era]
    k.set(100, mapcount=era["buddy"], private=2)  # free block of 4 pages
    k.set(101, mapping=1)  # stale data inside the block must not be looked at
    k.set(300, flags=1 << PG_LRU, mapping=0xFFFF888000100000)  # page cache
    k.set(301, flags=(1 << PG_LRU) | (1 << PG_PRIVATE), mapping=0xFFFF888000100000)
    k.set(302, flags=(1 << PG_SWAPCACHE) | (1 << PG_SWAPBACKED), mapping=0xFFFF888000100000)
    k.set(303, mapping=0xFFFF888000200001)  # anonymous
    k.set(304, flags=1 << PG_HWPOISON)
    k.set(305, mapcount=era["offline"])
    if "slab" in era:  # a slab page whose mapping word is odd: not anonymous
        k.set(306, mapcount=era["slab"], mapping=0xFFFF888000300001)
    else:
        k.set(306, flags=1 << PG_SLAB, mapping=0xFFFF888000300000)
    k.set(400, mapcount=era["buddy"], private=11)  # invalid order: kept, warned
    k.compound(512, 9, mapping=0xFFFF888000400001)  # anonymous THP
    k.compound(1024, 2, flags=1 << PG_LRU, mapping=0xFFFF888000500000)  # large page-cache folio
    k.compound(1030, 1, hugetlb=True)  # hugetlbfs page (mapping not anonymous)
    k.compound(1037, 1, mapping=0xFFFF888000600001)  # misaligned head: order taken as 0
    return {
        "free": list(range(100, 104)),
        "cache": [300, 302, 1024, 1025, 1026, 1027],
        "cache_private": [301],
        "user": [303, *range(512, 1024), 1030, 1031, 1037],
        "hwpoison": [304],
        "offline": [305],
    }


def dropped(
    path: Path, level: int, chunk_pages: int = 1024
) -> tuple[list[int], dict[str, int], list[str], object]:
    with ElfVmcore(path) as vm:
        c = classifier(vm, level, chunk_pages=chunk_pages)
        gone: list[int] = []
        for chunk in c.chunks():
            gone += (np.flatnonzero(~chunk.dumpable & chunk.present) + chunk.start_pfn).tolist()
        return gone, c.counts.as_dict(), c.warnings, c


@pytest.mark.parametrize("era", ["6.1", "6.12"])
def test_every_kind_of_page_at_level_31(tmp_path: Path, era: str) -> None:
    k = Kernel(era)
    want = populate(k)
    gone, counts, warnings, c = dropped(k.write(tmp_path), 31)
    assert warnings == []
    assert gone == sorted(p for pfns in want.values() for p in pfns)
    assert counts == {**{name: len(pfns) for name, pfns in want.items()}, "zero": 0}
    assert c.invalid_orders == [(400, 11)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("level", "kinds"),
    [
        (0, ["hwpoison", "offline"]),
        (2, ["cache", "hwpoison", "offline"]),
        (4, ["cache", "cache_private", "hwpoison", "offline"]),
        (8, ["user", "hwpoison", "offline"]),
        (16, ["free", "hwpoison", "offline"]),
    ],
)
def test_single_levels(tmp_path: Path, level: int, kinds: list[str]) -> None:
    k = Kernel("6.12")
    want = populate(k)
    gone, counts, _, _ = dropped(k.write(tmp_path), level)
    expect = {kind: list(want[kind]) for kind in kinds}
    if level == 8:
        # Without bit 16 the walk does not jump over the free block at 100, so it examines 101,
        # whose stale odd mapping word reads as anonymous (makedumpfile does the same).
        expect["user"].append(101)
    assert gone == sorted(p for pfns in expect.values() for p in pfns)
    assert {n: v for n, v in counts.items() if v} == {k: len(v) for k, v in expect.items()}


def test_missing_buddy_key_drops_free_pages_with_a_warning(tmp_path: Path) -> None:
    k = Kernel("6.12")
    want = populate(k)
    gone, counts, warnings, c = dropped(
        k.write(tmp_path, drop="NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)"), 31
    )
    assert c.level == 15  # type: ignore[attr-defined]
    assert warnings == [
        "-d 31: free pages cannot be told apart (VMCOREINFO lacks "
        "NUMBER(PAGE_BUDDY_MAPCOUNT_VALUE)); they are kept"
    ]
    assert counts["free"] == 0 and 100 not in gone and 303 in gone
    assert 101 in gone  # now examined: its stale odd mapping makes it "anonymous"
    assert want


def test_missing_memory_model_keeps_everything(tmp_path: Path) -> None:
    k = Kernel("6.1")
    populate(k)
    gone, _, warnings, c = dropped(k.write(tmp_path, drop="SYMBOL(mem_map)"), 31)
    assert gone == [] and c.level == 1  # type: ignore[attr-defined]
    assert len(warnings) == 4 and all("SYMBOL(mem_map)" in w for w in warnings)


def test_a_block_running_past_a_chunk_is_cleared_and_counted_once(tmp_path: Path) -> None:
    k = Kernel("6.12")
    k.set(1024, mapcount=ERA["6.12"]["buddy"], private=10)  # 1024 free pages up to the end
    k.set(1800, mapping=1)  # inside the block, in the next chunk: not examined
    gone, counts, _, _ = dropped(k.write(tmp_path), 31, chunk_pages=512)
    assert gone == list(range(1024, 2048)) and counts["free"] == 1024 and counts["user"] == 0


def test_no_vmcoreinfo_leaves_only_zero_pages(tmp_path: Path) -> None:
    path = tmp_path / "vmcore"
    path.write_bytes(build([Seg(0, 64 * 4096)], default_notes(None)))
    with ElfVmcore(path) as vm:
        c = classifier(vm, 31)
        assert c.level == 1
        assert all("the input has no VMCOREINFO" in w for w in c.warnings)
        assert len(c.warnings) == 4
        assert [bool(ch.dumpable.all()) for ch in c.chunks()] == [True]
    with ElfVmcore(path) as vm:
        assert classifier(vm, 1).warnings == [
            "hwpoison and offline pages cannot be found (the input has no VMCOREINFO); "
            "they are kept"
        ]


def test_unreadable_struct_pages_name_the_pfns(tmp_path: Path) -> None:
    k = Kernel("6.12")
    # mem_map in the direct map, which the (empty) page tables do not map.
    struct.pack_into("<Q", k.mem, POINTER_PA, 0xFFFF888000100000)
    with ElfVmcore(k.write(tmp_path)) as vm:
        c = classifier(vm, 31)
        message = r"struct pages of pfns 0x0-0x7ff: .* is not mapped \(PGD entry 273"
        with pytest.raises(VmcoreError, match=message):
            list(c.chunks())


@pytest.mark.parametrize(("pages", "whole"), [(64, True), (63, False)])
def test_partial_trailing_page_follows_makedumpfiles_bitmap_mode(
    tmp_path: Path, pages: int, whole: bool
) -> None:
    """makedumpfile keeps its bitmaps whole when 2 * max_mapnr bits fill whole bytes (here 64
    pfns), and only then puts a PT_LOAD's partial trailing page in bitmap 1. Bitmap 2 never
    has it."""
    path = tmp_path / "vmcore"
    segs = [Seg(0x1000, 0x3C00), Seg(0x8000, pages * 4096 - 0x8000)]
    path.write_bytes(build(segs, default_notes(None)))
    with ElfVmcore(path) as vm:
        assert makedumpfile_single_cycle(vm.max_mapnr) is whole
        c = classifier(vm, 0)
        (chunk,) = list(c.chunks())
        assert bool(chunk.present[4]) is whole and not chunk.dumpable[4]
        assert chunk.present[1:4].all() and chunk.dumpable[1:4].all()
        assert c.layout.original == 3 + whole + pages - 8


def test_holes_between_ram_ranges_cost_nothing(tmp_path: Path) -> None:
    """RAM at 0 and at 1 TiB: only the chunks holding RAM are produced."""
    path = tmp_path / "vmcore"
    path.write_bytes(build([Seg(0, 8192), Seg(1 << 40, 8192)], default_notes(None)))
    with ElfVmcore(path) as vm:
        chunks = list(classifier(vm, 1).chunks())
    assert [(c.start_pfn, int(c.present.sum())) for c in chunks] == [(0, 2), (1 << 28, 2)]


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 31))
def test_garbage_struct_pages_never_break_the_walk(seed: int, level: int) -> None:
    """Whatever the struct pages hold (a corrupted crashed kernel), the classifier ends with
    a subset of the present pages and sane counts. Fields mix random words with the values
    the classifier reacts to, so every branch meets nonsense."""
    import tempfile

    rng = np.random.default_rng(seed)
    era = ERA["6.12"]
    k = Kernel("6.12")

    def pick(choices: list[int]) -> list[int]:
        words = rng.integers(0, 1 << 63, PAGES, dtype=np.uint64).tolist()
        chosen = rng.choice(choices, PAGES).tolist()
        return [c if rng.random() < 0.7 else w for c, w in zip(chosen, words, strict=True)]

    fields = {
        "flags": pick([0, HEAD, 1 << PG_LRU, (1 << PG_LRU) | (1 << PG_PRIVATE), 1 << PG_HWPOISON]),
        "mapcount": pick([-1, era["buddy"], era["slab"], era["hugetlb"], era["offline"]]),
        "private": pick([0, 1, 9, 10, 11, 63, 64, 200]),
        "compound_head": pick([0, 1, 0xFFFF888000000001]),
        "mapping": pick([0, 1, 0xFFFF888000100000, 0xFFFF888000100001]),
    }
    for pfn in range(PAGES):
        k.set(pfn, **{name: int(values[pfn]) for name, values in fields.items()})
    with tempfile.TemporaryDirectory() as tmp, ElfVmcore(k.write(Path(tmp))) as vm:
        c = classifier(vm, level, chunk_pages=512)
        kept = 0
        for chunk in c.chunks():
            assert not (chunk.dumpable & ~chunk.present).any()
            kept += int(chunk.dumpable.sum())
        counts = c.counts.as_dict()
    assert all(v >= 0 for v in counts.values())
    assert 0 <= kept <= PAGES
    assert len(c.invalid_orders) <= 1000


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 30))),
    st.lists(st.tuples(st.integers(0, 200), st.integers(0, 30))),
)
def test_range_subtraction(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> None:
    from kdumpd.vmcore.ranges import mask, merge, subtract

    ranges, holes = merge([(x, x + n) for x, n in a]), merge([(x, x + n) for x, n in b])
    got = mask(subtract(ranges, holes), 0, 240)
    assert np.array_equal(got, mask(ranges, 0, 240) & ~mask(holes, 0, 240))
