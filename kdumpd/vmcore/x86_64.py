"""x86_64 kernel virtual addresses → physical, and reads through them.

Kernel-image addresses (every VMCOREINFO SYMBOL) translate arithmetically with ``phys_base``;
everything else (direct map, vmemmap, vmalloc) goes through the crashed kernel's own page
tables, starting at ``init_top_pgt``. No CR3 is needed and no KASLR base has to be guessed:
the randomised ``page_offset_base``/``vmemmap_base`` are simply where the tables say.
"""

from __future__ import annotations

import struct
from typing import Protocol

from kdumpd.vmcore.errors import AddressError, VmcoreinfoMissingError
from kdumpd.vmcore.vmcoreinfo import Vmcoreinfo

START_KERNEL_MAP = 0xFFFFFFFF80000000
DEFAULT_KERNEL_IMAGE_SIZE = 1 << 30
_ENTRY_MASK = 0x000FFFFFFFFFF000
_PRESENT = 0x1
_PSE = 0x80
_U64 = (1 << 64) - 1
_MAX_LEAVES = 4096  # translations cached; vmemmap and the direct map use 2 MiB or 1 GiB pages
_LEVEL_NAMES = ("PGD", "P4D", "PUD", "PMD", "PTE")


class PhysReader(Protocol):
    def read_phys(self, paddr: int, size: int) -> bytes: ...


class X86_64:
    """Address translation for one crashed x86_64 kernel."""

    def __init__(
        self, memory: PhysReader, info: Vmcoreinfo, text_load: tuple[int, int] | None = None
    ) -> None:
        """``text_load`` is ``(p_vaddr, p_paddr)`` of the kernel-text PT_LOAD, used only when
        VMCOREINFO lacks NUMBER(phys_base) (as makedumpfile derives it)."""
        self._mem = memory
        phys_base = info.number("phys_base")
        if phys_base is None:
            if text_load is None:
                raise VmcoreinfoMissingError(
                    "VMCOREINFO lacks NUMBER(phys_base) and the dump has no kernel-text PT_LOAD"
                )
            phys_base = text_load[1] - (text_load[0] - START_KERNEL_MAP)
        self.phys_base = phys_base & _U64
        top = (
            info.symbol("init_top_pgt")
            or info.symbol("init_level4_pgt")
            or info.symbol("swapper_pg_dir")
        )
        if top is None:
            raise VmcoreinfoMissingError(
                "VMCOREINFO lacks SYMBOL(init_top_pgt), needed to translate kernel addresses"
            )
        self.levels = 5 if info.number("pgtable_l5_enabled") == 1 else 4
        self.sme_mask = (info.number("sme_mask") or 0) & _U64
        self._image_end = START_KERNEL_MAP + (
            info.number("KERNEL_IMAGE_SIZE") or DEFAULT_KERNEL_IMAGE_SIZE
        )
        self._top_pa = self._image_pa(top)
        # Leaf cache: (virtual base, size) → physical base, for 4 KiB, 2 MiB and 1 GiB pages.
        self._leaves: dict[tuple[int, int], int] = {}

    def vtop(self, vaddr: int) -> int:
        pa, _ = self._translate(vaddr)
        return pa

    def read_virt(self, vaddr: int, size: int) -> bytes:
        """``size`` bytes at kernel virtual ``vaddr``; an unmapped page is an error."""
        parts: list[bytes] = []
        done = 0
        while done < size:
            pa, room = self._translate(vaddr + done)
            n = min(room, size - done)
            # Merge physically contiguous pieces into one read.
            while done + n < size:
                nxt, nroom = self._translate(vaddr + done + n)
                if nxt != pa + n:
                    break
                n += min(nroom, size - done - n)
            parts.append(self._mem.read_phys(pa, n))
            done += n
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_u64(self, vaddr: int) -> int:
        value: int = struct.unpack("<Q", self.read_virt(vaddr, 8))[0]
        return value

    def _image_pa(self, vaddr: int) -> int:
        return (vaddr - START_KERNEL_MAP + self.phys_base) & _U64

    def _translate(self, vaddr: int) -> tuple[int, int]:
        """Physical address of ``vaddr`` and how many bytes from it stay in the same page."""
        vaddr &= _U64
        if START_KERNEL_MAP <= vaddr < self._image_end:
            return self._image_pa(vaddr), self._image_end - vaddr
        for size in (1 << 12, 1 << 21, 1 << 30):
            base = self._leaves.get((vaddr & ~(size - 1), size))
            if base is not None:
                off = vaddr & (size - 1)
                return base + off, size - off
        base, size = self._walk(vaddr)
        if len(self._leaves) >= _MAX_LEAVES:
            self._leaves.clear()
        self._leaves[(vaddr & ~(size - 1), size)] = base
        off = vaddr & (size - 1)
        return base + off, size - off

    def _walk(self, vaddr: int) -> tuple[int, int]:
        """Walk the page tables: the leaf's physical base and its size."""
        shifts = (48, 39, 30, 21, 12) if self.levels == 5 else (39, 30, 21, 12)
        names = _LEVEL_NAMES if self.levels == 5 else _LEVEL_NAMES[:1] + _LEVEL_NAMES[2:]
        table = self._top_pa
        for shift, name in zip(shifts, names, strict=True):
            index = (vaddr >> shift) & 0x1FF
            entry: int = struct.unpack("<Q", self._mem.read_phys(table + index * 8, 8))[0]
            if not entry & _PRESENT:
                raise AddressError(
                    f"kernel address {vaddr:#x} is not mapped ({name} entry {index} not present)"
                )
            table = entry & _ENTRY_MASK & ~self.sme_mask
            if shift in (30, 21) and entry & _PSE:
                size = 1 << shift
                return table & ~(size - 1), size
        return table, 1 << 12
