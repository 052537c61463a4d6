"""Build small synthetic ELF64 vmcores for the reader's unit tests.

Layouts: the kernel's /proc/vmcore (phdrs at 64, notes page-aligned, page-aligned data), QEMU
dump-guest-memory (a section header at 64, phdrs after it, unaligned data, p_offset -1 holes)
and PN_XNUM. Each segment's data is generated from its physical address, so a test can check
any byte it reads back with :func:`expected_byte`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

EM_X86_64 = 62
PT_LOAD, PT_NOTE = 1, 4
PN_XNUM = 0xFFFF
NO_OFFSET = (1 << 64) - 1

VMCOREINFO = b"OSRELEASE=6.1.0-test\nPAGESIZE=4096\nSYMBOL(init_uts_ns)=ffffffff82000000\n"


@dataclass
class Seg:
    paddr: int
    memsz: int
    filesz: int | None = None  # default memsz
    vaddr: int | None = None  # default paddr
    no_data: bool = False  # QEMU's p_offset = -1
    data: bytes | None = None  # default: expected_byte() of each address


def expected_byte(paddr: int) -> int:
    """Content of every synthetic memory byte: depends only on the physical address."""
    return (paddr * 7 + (paddr >> 12)) & 0xFF


def note(name: bytes, ntype: int, desc: bytes) -> bytes:
    name0 = name + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name0), len(desc), ntype) + pad(name0) + pad(desc)


def default_notes(vmcoreinfo: bytes | None = VMCOREINFO, cpus: int = 2) -> bytes:
    out = b"".join(note(b"CORE", 1, bytes([cpu]) * 336) for cpu in range(cpus))
    if vmcoreinfo is not None:
        out += note(b"VMCOREINFO", 0, vmcoreinfo)
    return out


def build(
    segs: list[Seg],
    notes: bytes | None = None,
    *,
    qemu: bool = False,
    xnum: bool = False,
    machine: int = EM_X86_64,
    elfclass: int = 2,
) -> bytes:
    notes = default_notes() if notes is None else notes
    nph = 1 + len(segs)
    shdr = qemu or xnum
    phoff = 64 + 64 if qemu else 64
    shoff = 64 if qemu else 64 + 56 * nph
    header_end = 64 + 56 * nph + (64 if shdr else 0)
    notes_off = header_end if qemu else -(-header_end // 4096) * 4096
    data_off = notes_off + len(notes)
    if not qemu:
        data_off = -(-data_off // 4096) * 4096
    phdrs = [struct.pack("<IIQQQQQQ", PT_NOTE, 0, notes_off, 0, 0, len(notes), len(notes), 0)]
    blobs: list[tuple[int, bytes]] = []
    pos = data_off
    for s in segs:
        filesz = s.memsz if s.filesz is None else s.filesz
        vaddr = s.paddr if s.vaddr is None else s.vaddr
        if s.no_data:
            ph = struct.pack("<IIQQQQQQ", PT_LOAD, 7, NO_OFFSET, vaddr, s.paddr, 0, s.memsz, 0)
            phdrs.append(ph)
            continue
        if s.data is not None:
            body = s.data[:filesz].ljust(filesz, b"\0")
        else:
            addrs = np.arange(s.paddr, s.paddr + filesz, dtype=np.uint64)
            body = ((addrs * 7 + (addrs >> 12)) & 0xFF).astype(np.uint8).tobytes()
        phdrs.append(struct.pack("<IIQQQQQQ", PT_LOAD, 7, pos, vaddr, s.paddr, filesz, s.memsz, 0))
        blobs.append((pos, body))
        pos += filesz
    ehdr = bytearray(64)
    ehdr[:16] = b"\x7fELF" + bytes([elfclass, 1, 1]) + bytes(9)
    struct.pack_into(
        "<HHIQQQIHHHHHH",
        ehdr,
        16,
        4,
        machine,
        1,
        0,
        phoff,
        shoff if shdr else 0,
        0,
        64,
        56,
        PN_XNUM if xnum else nph,
        64 if shdr else 0,
        1 if shdr else 0,
        0,
    )
    out = bytearray(pos)
    out[:64] = ehdr
    out[phoff : phoff + 56 * nph] = b"".join(phdrs)
    if shdr:
        # Section header 0: SHT_NULL whose sh_info carries the real phnum (PN_XNUM rule).
        out[shoff : shoff + 64] = struct.pack("<IIQQQQIIQQ", 0, 0, 0, 0, 0, 0, 0, nph, 0, 0)
    out[notes_off : notes_off + len(notes)] = notes
    for off, body in blobs:
        out[off : off + len(body)] = body
    return bytes(out)
