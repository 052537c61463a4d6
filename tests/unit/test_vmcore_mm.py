"""Locating struct pages: SPARSEMEM (extreme or not, root-array or pointer symbol), FLATMEM."""

from __future__ import annotations

import struct

import pytest

from kdumpd.vmcore.errors import AddressError, VmcoreError, VmcoreinfoMissingError
from kdumpd.vmcore.mm import MemMapRange, locate_mem_map
from kdumpd.vmcore.vmcoreinfo import parse_vmcoreinfo

VMEMMAP = 0xFFFFEA0000000000
PPS = 1 << 15  # pages per section (SECTION_SIZE_BITS 27, 4 KiB pages)
BASE = "OSRELEASE=6.1\nPAGESIZE=4096\nSIZE(page)=64\nOFFSET(page.flags)=0\n"
BASE += "OFFSET(page._refcount)=52\nOFFSET(page.mapping)=24\n"
SPARSE = BASE + "SIZE(mem_section)=16\nOFFSET(mem_section.section_mem_map)=0\n"
SPARSE += "NUMBER(SECTION_SIZE_BITS)=27\nNUMBER(MAX_PHYSMEM_BITS)=46\n"


class Memory:
    """Kernel virtual memory as a dict of 8-byte words; anything else is unmapped."""

    def __init__(self) -> None:
        self.words: dict[int, int] = {}

    def put(self, vaddr: int, *values: int) -> None:
        for i, v in enumerate(values):
            self.words[vaddr + 8 * i] = v & ((1 << 64) - 1)

    def read_virt(self, vaddr: int, size: int) -> bytes:
        out = b""
        for a in range(vaddr, vaddr + size, 8):
            if a not in self.words:
                if a & 0xFFF == 0 or a == vaddr:
                    raise AddressError(f"kernel address {a:#x} is not mapped")
                out += bytes(8)
                continue
            out += struct.pack("<Q", self.words[a])
        return out


def coded(section: int, flags: int = 0b1011) -> int:
    """section_mem_map as the kernel stores it: mem_map minus the section's first pfn."""
    return VMEMMAP + section * PPS * 64 - section * PPS * 64 + flags


def test_sparsemem_extreme_root_array() -> None:
    mem = Memory()
    roots, root0 = 0xFFFF888000010000, 0xFFFF888000020000
    mem.put(roots, root0, 0)  # the second root is absent
    mem.put(root0, coded(0), 0, 0, 0, coded(2), 0)  # section 1 has no PRESENT bit
    info = parse_vmcoreinfo(
        (SPARSE + f"SYMBOL(mem_section)={roots:x}\nLENGTH(mem_section)=2048\n").encode()
    )
    model = locate_mem_map(mem, info, max_mapnr=3 * PPS - 100)
    assert model.kind == "SPARSEMEM_EX" and model.section_pages == PPS
    assert model.ranges == [
        MemMapRange(0, PPS, VMEMMAP),
        MemMapRange(2 * PPS, 3 * PPS - 100, VMEMMAP + 2 * PPS * 64),
    ]
    assert model.max_pfn(3 * PPS) == 3 * PPS - 100


def test_symbol_that_is_the_pointer_address_is_dereferenced_once() -> None:
    mem = Memory()
    pointer, roots, root0 = 0xFFFFFFFF82000000, 0xFFFF888000010000, 0xFFFF888000020000
    mem.put(pointer, roots)
    mem.put(roots, root0)
    mem.put(root0, coded(0), 0)
    info = parse_vmcoreinfo((SPARSE + f"SYMBOL(mem_section)={pointer:x}\n").encode())
    assert locate_mem_map(mem, info, PPS).ranges == [MemMapRange(0, PPS, VMEMMAP)]


def test_sparsemem_static_array() -> None:
    mem = Memory()
    array = 0xFFFFFFFF83000000
    mem.put(array, coded(0), 0, coded(1), 0)
    info = parse_vmcoreinfo(
        (SPARSE + f"SYMBOL(mem_section)={array:x}\nLENGTH(mem_section)=524288\n").encode()
    )
    model = locate_mem_map(mem, info, 2 * PPS)
    assert model.kind == "SPARSEMEM"
    assert [r.start_pfn for r in model.ranges] == [0, PPS]


def test_flatmem_and_missing_keys() -> None:
    mem = Memory()
    mem.put(0xFFFFFFFF81000000, 0xFFFF888000100000)
    info = parse_vmcoreinfo((BASE + "SYMBOL(mem_map)=ffffffff81000000\n").encode())
    model = locate_mem_map(mem, info, 1000)
    assert (model.kind, model.ranges) == ("FLATMEM", [MemMapRange(0, 1000, 0xFFFF888000100000)])
    with pytest.raises(
        VmcoreinfoMissingError, match=r"SYMBOL\(mem_section\) and SYMBOL\(mem_map\)"
    ):
        locate_mem_map(mem, parse_vmcoreinfo(BASE.encode()), 1000)
    with pytest.raises(VmcoreinfoMissingError, match=r"SIZE\(page\)"):
        locate_mem_map(mem, parse_vmcoreinfo(b"OSRELEASE=6.1\nPAGESIZE=4096\n"), 1000)


def test_no_valid_section_is_an_error() -> None:
    mem = Memory()
    roots = 0xFFFF888000010000
    mem.put(roots, 0)
    info = parse_vmcoreinfo((SPARSE + f"SYMBOL(mem_section)={roots:x}\n").encode())
    with pytest.raises(VmcoreError, match="could not validate mem_section"):
        locate_mem_map(mem, info, PPS)
