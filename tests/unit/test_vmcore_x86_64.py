"""x86_64 address translation over synthetic page tables (4/5-level, 4K/2M/1G pages)."""

from __future__ import annotations

import struct

import pytest

from kdumpd.vmcore.errors import AddressError, VmcoreinfoMissingError
from kdumpd.vmcore.vmcoreinfo import parse_vmcoreinfo
from kdumpd.vmcore.x86_64 import START_KERNEL_MAP, X86_64

MEM = 1 << 22  # 4 MiB of "physical memory"


class Memory:
    def __init__(self) -> None:
        self.data = bytearray(MEM)

    def read_phys(self, paddr: int, size: int) -> bytes:
        return bytes(self.data[paddr : paddr + size])

    def entry(self, table: int, index: int, value: int) -> None:
        struct.pack_into("<Q", self.data, table + index * 8, value)


def make(levels: int) -> tuple[Memory, X86_64, int]:
    mem = Memory()
    top = 0x1000  # physical address of the top table
    symbol = START_KERNEL_MAP + 0x200000 + top  # init_top_pgt, with phys_base = -2 MiB
    text = (
        f"OSRELEASE=t\nPAGESIZE=4096\nSYMBOL(init_top_pgt)={symbol:x}\n"
        f"NUMBER(phys_base)={-0x200000}\nNUMBER(pgtable_l5_enabled)={int(levels == 5)}\n"
    )
    return mem, X86_64(mem, parse_vmcoreinfo(text.encode())), top


def idx(vaddr: int, shift: int) -> int:
    return (vaddr >> shift) & 0x1FF


@pytest.mark.parametrize("levels", [4, 5])
def test_walk_4k_2m_1g_pages(levels: int) -> None:
    mem, mm, top = make(levels)
    va = 0xFF11_2233_4455_6000 if levels == 5 else 0xFFFF_8880_1234_5000
    tables = iter(range(0x2000, 0x10000, 0x1000))
    table = top
    shifts = [48, 39, 30, 21] if levels == 5 else [39, 30, 21]
    for shift in shifts:
        nxt = next(tables)
        mem.entry(table, idx(va, shift), nxt | 0x63)
        table = nxt
    mem.entry(table, idx(va, 12), 0x200000 | 0x8000000000000063)  # NX bit must be masked
    mem.data[0x200000 + 0x123 : 0x200000 + 0x127] = b"page"
    assert mm.vtop(va + 0x123) == 0x200123
    assert mm.read_virt(va + 0x123, 4) == b"page"

    # A 2 MiB page at the PMD level, and a 1 GiB page at the PUD level.
    va2 = va + (1 << 21)
    # Tables were allocated top-down from 0x2000: the last is the PTE table, before it the PMD.
    pmd = 0x2000 + 0x1000 * (len(shifts) - 2)
    mem.entry(pmd, idx(va2, 21), 0x200000 | 0xE3)
    assert mm.vtop(va2 + 0x54321) == 0x200000 + ((va2 + 0x54321) & 0x1FFFFF)
    va3 = va + (1 << 30)
    pud = 0x2000 + 0x1000 * (len(shifts) - 3)
    mem.entry(pud, idx(va3, 30), 0x0 | 0xE3)
    assert mm.vtop(va3 + 0x2ABCDE) == (va3 + 0x2ABCDE) & 0x3FFFFFFF


def test_reads_cross_pages_and_merge_contiguous_ones() -> None:
    mem, mm, top = make(4)
    va = 0xFFFF_8880_0000_0000
    mem.entry(top, idx(va, 39), 0x2000 | 1)
    mem.entry(0x2000, idx(va, 30), 0x3000 | 1)
    mem.entry(0x3000, idx(va, 21), 0x4000 | 1)
    mem.entry(0x4000, 0, 0x10000 | 1)
    mem.entry(0x4000, 1, 0x30000 | 1)  # not contiguous with the first
    mem.data[0x10FFE:0x11000] = b"ab"
    mem.data[0x30000:0x30002] = b"cd"
    assert mm.read_virt(va + 0xFFE, 4) == b"abcd"


def test_kernel_image_addresses_use_phys_base() -> None:
    mem, mm, _top = make(4)
    mem.data[0x5000:0x5004] = b"text"
    assert mm.read_virt(START_KERNEL_MAP + 0x205000, 4) == b"text"
    assert mm.phys_base == (1 << 64) - 0x200000


def test_unmapped_address_names_the_level() -> None:
    _, mm, _ = make(4)
    with pytest.raises(AddressError, match=r"0xffff888000000000 is not mapped \(PGD entry 273"):
        mm.vtop(0xFFFF888000000000)


def test_missing_keys() -> None:
    info = parse_vmcoreinfo(b"OSRELEASE=t\nPAGESIZE=4096\nSYMBOL(init_top_pgt)=ffffffff81000000\n")
    with pytest.raises(VmcoreinfoMissingError, match=r"NUMBER\(phys_base\)"):
        X86_64(Memory(), info)
    mm = X86_64(Memory(), info, text_load=(0xFFFFFFFF81000000, 0x1000000))
    assert mm.phys_base == 0
    info = parse_vmcoreinfo(b"OSRELEASE=t\nPAGESIZE=4096\nNUMBER(phys_base)=0\n")
    with pytest.raises(VmcoreinfoMissingError, match=r"SYMBOL\(init_top_pgt\)"):
        X86_64(Memory(), info)
