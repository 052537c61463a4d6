"""``--show-stats``: the page report in makedumpfile's layout (dump-formats.md §9)."""

from __future__ import annotations

from dataclasses import dataclass

# Report label and counter name, in makedumpfile's order.
_CATEGORIES = (
    ("Pages filled with zero  ", "zero"),
    ("Non-private cache pages ", "cache"),
    ("Private cache pages     ", "cache_private"),
    ("User process data pages ", "user"),
    ("Free pages              ", "free"),
    ("Hwpoison pages          ", "hwpoison"),
    ("Offline pages           ", "offline"),
)


@dataclass(frozen=True)
class PageStats:
    """``original`` counts pages per PT_LOAD as makedumpfile does (kernel text twice)."""

    original: int
    total: int
    counts: dict[str, int]
    write_bytes: int
    # ELF output: pages left out of the file (only in p_memsz) and pages written to it
    elf_pages: tuple[int, int] | None = None

    @property
    def excluded(self) -> int:
        return sum(self.counts.get(name, 0) for _, name in _CATEGORIES)

    @property
    def remaining(self) -> int:
        return self.original - self.excluded


def format_report(stats: PageStats) -> str:
    def hex16(n: int) -> str:
        return f"0x{n:016x}"

    lines = [f"Original pages  : {hex16(stats.original)}"]
    lines.append(f"  Excluded pages   : {hex16(stats.excluded)}")
    if stats.elf_pages:
        lines.append(f"     in ELF format : {hex16(stats.elf_pages[0])}")
    lines += [f"    {label}: {hex16(stats.counts.get(name, 0))}" for label, name in _CATEGORIES]
    lines.append(f"  Remaining pages  : {hex16(stats.remaining)}")
    remaining = stats.remaining
    if stats.elf_pages:
        lines.append(f"     in ELF format : {hex16(stats.elf_pages[1])}")
        remaining = stats.elf_pages[1]
    if stats.original:
        lines.append(f"  (The number of pages is reduced to {remaining * 100 // stats.original}%.)")
    lines.append(f"Memory Hole     : {hex16(stats.total - stats.original)}")
    lines.append("-" * 50)
    lines.append(f"Total pages     : {hex16(stats.total)}")
    lines.append(f"Write bytes     : {stats.write_bytes}")
    return "\n".join(lines) + "\n"
