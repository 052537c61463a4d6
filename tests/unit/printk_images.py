"""Memory images of kernel log buffers, laid out as the kernel writes them, for printk tests.

Each builder returns the VMCOREINFO text, a readable memory and the records it wrote, so a test
can state the expected dmesg from its inputs independently of the parser under test.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from kdumpd.vmcore.errors import AddressError
from kdumpd.vmcore.vmcoreinfo import Vmcoreinfo, parse_vmcoreinfo

KERNEL = 0xFFFFFFFF81000000


@dataclass
class Memory:
    """Sparse kernel virtual memory: regions of bytes; reads outside them raise AddressError."""

    regions: dict[int, bytearray] = field(default_factory=dict)
    reads: int = 0

    def put(self, addr: int, data: bytes) -> None:
        self.regions[addr] = bytearray(data)

    def read(self, addr: int, size: int) -> bytes:
        self.reads += 1
        for base, data in self.regions.items():
            if base <= addr and addr + size <= base + len(data):
                return bytes(data[addr - base : addr - base + size])
        raise AddressError(f"{addr:#x}+{size} not in the test image")


# The 6.1/6.12 x86_64 layout, as in the fixture's VMCOREINFO.
LOCKLESS_KEYS = """OSRELEASE=6.1.0-56-amd64
PAGESIZE=4096
SYMBOL(prb)={prb:x}
SIZE(printk_ringbuffer)=88
OFFSET(printk_ringbuffer.desc_ring)=0
OFFSET(printk_ringbuffer.text_data_ring)=48
SIZE(prb_desc_ring)=48
OFFSET(prb_desc_ring.count_bits)=0
OFFSET(prb_desc_ring.descs)=8
OFFSET(prb_desc_ring.infos)=16
OFFSET(prb_desc_ring.head_id)=24
OFFSET(prb_desc_ring.tail_id)=32
SIZE(prb_desc)=24
OFFSET(prb_desc.state_var)=0
OFFSET(prb_desc.text_blk_lpos)=8
OFFSET(prb_data_blk_lpos.begin)=0
OFFSET(prb_data_blk_lpos.next)=8
SIZE(printk_info)=88
OFFSET(printk_info.seq)=0
OFFSET(printk_info.ts_nsec)=8
OFFSET(printk_info.text_len)=16
OFFSET(printk_info.caller_id)=20
OFFSET(prb_data_ring.size_bits)=0
OFFSET(prb_data_ring.data)=8
OFFSET(atomic_long_t.counter)=0
"""

ID_MASK = (1 << 62) - 1
FINALIZED, COMMITTED, REUSABLE = 2, 1, 3


@dataclass
class Record:
    ts_nsec: int
    text: bytes
    state: int = FINALIZED
    # text_len the info claims (default: the real length); larger values get clamped
    claimed_len: int | None = None


@dataclass
class LocklessImage:
    keys: str  # the VMCOREINFO text
    info: Vmcoreinfo
    memory: Memory
    kept: list[Record]  # the records a reader must print, oldest first
    addrs: dict[str, int]


def lockless_image(
    records: Sequence[Record], count_bits: int = 4, size_bits: int = 9, first_id: int = 0
) -> LocklessImage:
    """A printk_ringbuffer after the kernel stored RECORDS (ids from FIRST_ID on).

    Data blocks are ``[id][text]`` padded to 8 bytes; one that does not fit before the end of
    the text ring goes to offset 0 with ``begin`` left at the end, as data_alloc() does. The
    tail moves past records whose descriptor slot or data block was overwritten.
    """
    count, size = 1 << count_bits, 1 << size_bits
    descs, infos, data = bytearray(24 * count), bytearray(88 * count), bytearray(size)
    lpos, blocks = size * 3, []  # lpos starts anywhere; a multiple of the ring size is simplest
    for rec in records:
        blk = 8 + (len(rec.text) + 7) // 8 * 8
        assert blk <= size // 2, "text too long for the ring"
        begin = lpos
        at = begin % size
        end = begin + blk if at + blk <= size else begin - at + size + blk
        blocks.append((begin, end))
        lpos = end
    oldest = max(0, len(records) - count)  # index of the oldest record still in the ring
    while blocks[oldest][0] < lpos - size:  # its data was overwritten
        oldest += 1
    head = (first_id + len(records) - 1) & ID_MASK
    tail = (first_id + oldest) & ID_MASK
    for n, (rec, (begin, end)) in enumerate(zip(records, blocks, strict=True)):
        rid = (first_id + n) & ID_MASK
        slot = rid % count
        struct.pack_into("<QQQ", descs, 24 * slot, rec.state << 62 | rid, begin, end)
        claimed = len(rec.text) if rec.claimed_len is None else rec.claimed_len
        struct.pack_into("<QQH", infos, 88 * slot, n, rec.ts_nsec, claimed)
        off = (end - 8 - (len(rec.text) + 7) // 8 * 8) % size
        data[off : off + 8] = struct.pack("<Q", rid)
        data[off + 8 : off + 8 + len(rec.text)] = rec.text
    addrs = {"prb_ptr": KERNEL, "prb": KERNEL + 0x100, "descs": KERNEL + 0x10000}
    addrs["infos"] = addrs["descs"] + len(descs) + 0x1000
    addrs["data"] = addrs["infos"] + len(infos) + 0x1000
    prb = bytearray(88)
    struct.pack_into("<IxxxxQQQQ", prb, 0, count_bits, addrs["descs"], addrs["infos"], head, tail)
    struct.pack_into("<IxxxxQ", prb, 48, size_bits, addrs["data"])
    memory = Memory()
    memory.put(addrs["prb_ptr"], struct.pack("<Q", addrs["prb"]))
    memory.put(addrs["prb"], prb)
    memory.put(addrs["descs"], descs)
    memory.put(addrs["infos"], infos)
    memory.put(addrs["data"], data)
    kept = [
        rec for n, rec in enumerate(records) if n >= oldest and rec.state in (FINALIZED, COMMITTED)
    ]
    keys = LOCKLESS_KEYS.format(prb=addrs["prb_ptr"])
    return LocklessImage(keys, parse_vmcoreinfo(keys.encode()), memory, kept, addrs)


STRUCTURED_KEYS = """OSRELEASE=4.19.0-27-amd64
PAGESIZE=4096
SYMBOL(log_buf)={log_buf:x}
SYMBOL(log_buf_len)={log_buf_len:x}
SYMBOL(log_first_idx)={first:x}
SYMBOL(log_next_idx)={next:x}
SIZE(printk_log)=16
OFFSET(printk_log.ts_nsec)=0
OFFSET(printk_log.len)=8
OFFSET(printk_log.text_len)=10
"""


@dataclass
class StructuredImage:
    keys: str
    info: Vmcoreinfo
    memory: Memory
    buf_addr: int
    buf: bytearray
    kept: list[Record]


def _has_space(buf_len: int, first: int, nxt: int, size: int, empty: bool) -> bool:
    """logbuf_has_space(): room for a record of SIZE plus the header of a wrap marker."""
    free = max(buf_len - nxt, first) if nxt > first or empty else first - nxt
    return free >= size + 16


def structured_image(records: Sequence[Record], buf_len: int = 512) -> StructuredImage:
    """log_buf of a 3.5-5.9 kernel after log_store() of RECORDS, freeing space as it does.

    Each record is a 16-byte ``struct printk_log`` header, the text and padding to 8 bytes. When
    a record and a following header do not fit before the end, a zeroed header marks the wrap
    and the record goes to offset 0; log_first_idx moves on (log_make_free_space) until the new
    record fits.
    """
    buf = bytearray(buf_len)

    def next_idx(idx: int) -> int:
        length = struct.unpack_from("<H", buf, idx + 8)[0]
        return struct.unpack_from("<H", buf, 8)[0] if length == 0 else idx + length

    first = nxt = first_seq = next_seq = 0
    for rec in records:
        size = 16 + (len(rec.text) + 7) // 8 * 8
        while first_seq < next_seq and not _has_space(buf_len, first, nxt, size, False):
            first, first_seq = next_idx(first), first_seq + 1
        assert _has_space(buf_len, first, nxt, size, first_seq == next_seq), "record too large"
        if nxt + size + 16 > buf_len:
            buf[nxt : nxt + 16] = bytes(16)
            nxt = 0
        struct.pack_into("<QHH", buf, nxt, rec.ts_nsec, size, len(rec.text))
        buf[nxt + 16 : nxt + 16 + len(rec.text)] = rec.text
        nxt, next_seq = nxt + size, next_seq + 1
    base = KERNEL + 0x200000
    addrs = {"ptr": KERNEL, "len": KERNEL + 8, "first": KERNEL + 12, "next": KERNEL + 16}
    memory = Memory()
    memory.put(addrs["ptr"], struct.pack("<QIII", base, buf_len, first, nxt))
    memory.regions[base] = buf  # shared, so that a test can corrupt it after building
    keys = STRUCTURED_KEYS.format(
        log_buf=addrs["ptr"], log_buf_len=addrs["len"], first=addrs["first"], next=addrs["next"]
    )
    info = parse_vmcoreinfo(keys.encode())
    return StructuredImage(keys, info, memory, base, buf, list(records[first_seq:]))
