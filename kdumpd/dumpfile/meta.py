"""What a dump header needs to know about the crashed kernel, gathered from the input.

From an ELF vmcore: notes (nr_cpus, where VMCOREINFO sits), VMCOREINFO (phys_base, CRASHTIME,
OSRELEASE) and ``init_uts_ns`` read from memory for the utsname.  From a kdump-compressed input
(re-filtering): its own header, so nothing is recomputed from a dump that may lack pages.
"""

from __future__ import annotations

from typing import Final

from kdumpd.dumpfile.kdump import DumpMeta
from kdumpd.dumpfile.kdump_format import UTS_FIELD, Utsname
from kdumpd.dumpfile.kdump_reader import KdumpSource
from kdumpd.vmcore.notes import NT_PRSTATUS, parse_notes
from kdumpd.vmcore.source import DumpSource
from kdumpd.vmcore.vmcoreinfo import Vmcoreinfo, parse_vmcoreinfo

START_KERNEL_MAP: Final = 0xFFFFFFFF80000000
# The kernel has exported init_uts_ns.name at this offset since it became a namespace (2.6.19).
_DEFAULT_UTS_NAME_OFFSET: Final = 4


def _align4(n: int) -> int:
    return (n + 3) & ~3


def vmcoreinfo_desc_offset(notes: bytes) -> int | None:
    """Offset of the VMCOREINFO note's desc inside the note data (the sub header points at it)."""
    pos = 0
    for note in parse_notes(notes):
        # Linux writes namesz = strlen(name) + 1 for every note it emits.
        desc_at = pos + 12 + _align4(len(note.name) + 1)
        if note.name == "VMCOREINFO":
            return desc_at
        pos = desc_at + _align4(len(note.desc))
    return None


def count_cpus(notes: bytes) -> int:
    """CPUs that saved registers: "CORE" NT_PRSTATUS notes, as makedumpfile counts them."""
    return sum(1 for n in parse_notes(notes) if n.name == "CORE" and n.type == NT_PRSTATUS)


def read_utsname(source: DumpSource, info: Vmcoreinfo) -> Utsname:
    """``init_uts_ns.name`` from the crashed kernel's memory; OSRELEASE alone if unreadable.

    SYMBOL(init_uts_ns) is a kernel-image address, so ``pa = v - __START_KERNEL_map +
    phys_base`` (dump-formats.md §4.3) needs no page-table walk.
    """
    fallback = Utsname(release=info.osrelease)
    sym = info.symbol("init_uts_ns")
    phys_base = info.number("phys_base")
    if sym is None or phys_base is None or sym < START_KERNEL_MAP:
        return fallback
    offset = info.offset("uts_namespace.name")
    pa = sym + (_DEFAULT_UTS_NAME_OFFSET if offset is None else offset)
    pa = (pa - START_KERNEL_MAP + phys_base) & ((1 << 64) - 1)
    uts = Utsname.unpack(source.read_phys(pa, 6 * UTS_FIELD))
    # Memory that does not hold this kernel's utsname (wrong phys_base, excluded page) is not
    # worth more than what VMCOREINFO says for certain.
    if uts.release != info.osrelease or uts.sysname != "Linux":
        return fallback
    return uts


def dump_meta(source: DumpSource, max_mapnr: int) -> DumpMeta:
    notes = source.notes
    vi_offset = vmcoreinfo_desc_offset(notes)
    raw = source.vmcoreinfo_raw
    if isinstance(source, KdumpSource):
        hdr, sub = source.header, source.sub_header
        return DumpMeta(
            utsname=hdr.utsname,
            page_size=source.page_size,
            max_mapnr=max_mapnr,
            notes=notes,
            nr_cpus=hdr.nr_cpus,
            phys_base=sub.phys_base,
            crash_time=hdr.crash_time,
            vmcoreinfo_offset=vi_offset,
            vmcoreinfo_size=len(raw) if raw else 0,
            input_incomplete=hdr.incomplete,
        )
    info = parse_vmcoreinfo(raw) if raw else None
    return DumpMeta(
        utsname=read_utsname(source, info) if info else Utsname(),
        page_size=source.page_size,
        max_mapnr=max_mapnr,
        notes=notes,
        nr_cpus=count_cpus(notes),
        phys_base=(info.number("phys_base") or 0) if info else 0,
        crash_time=(info.crash_time or 0) if info else 0,
        vmcoreinfo_offset=vi_offset,
        vmcoreinfo_size=len(raw) if raw else 0,
    )
