"""dmesg of the crashed kernel, as ``makedumpfile --dump-dmesg`` (Debian's 1.7.2) writes it.

Three layouts of the kernel's log buffer, chosen by the VMCOREINFO symbols that exist
(dump-formats.md §8):

- ``SYMBOL(prb)``: the lockless printk_ringbuffer (5.10+): descriptor ring, info array and text
  data ring;
- no ``SYMBOL(log_end)``: variable-length ``struct printk_log`` records in ``log_buf`` (3.5-5.9);
- otherwise: the plain character ring of kernels before 3.5, written out raw.

Records are printed as ``[%5lu.%06lu] text``; a newline inside the text is followed by as many
spaces as the prefix is long, and bytes that are neither printable nor whitespace in the C locale
become ``\\xNN``. makedumpfile passes a plain (signed) ``char`` to ``%02x``, so bytes from 0x80 up
print as ``\\xffffffNN``; we write the same bytes. makedumpfile 1.7.2 writes no caller-id column.

Everything here works on a ``read(vaddr, size) -> bytes`` callable (kernel virtual addresses), so
the parsers are pure and run on any dump source. Every loop is bounded by the ring's own size and
every allocation by the sizes named below; bad or hostile input raises :class:`DmesgError` (or
:class:`~kdumpd.vmcore.errors.VmcoreinfoMissingError` for an absent key), never loops forever.

For the CLI (``kdumpd-capture --dump-dmesg VMCORE FILE``): ``dump_dmesg(source, path)`` writes
the file (under a temporary name, renamed when whole) and raises a KdumpdError subclass on failure;
the caller prints ``The dmesg log is saved to FILE.`` as makedumpfile does. When the records are
corrupt part-way, FILE keeps the sound records followed by a line saying where it stopped, and
DmesgCorruptError is raised, so the exit status is non-zero (makedumpfile keeps them too).
``iter_dmesg(vmcoreinfo, read)`` and ``dmesg_text`` are the pure parts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator

from kdumpd.vmcore.elf import kernel_text_load
from kdumpd.vmcore.errors import AddressError, VmcoreError, VmcoreinfoMissingError
from kdumpd.vmcore.source import DumpSource
from kdumpd.vmcore.vmcoreinfo import Vmcoreinfo, parse_vmcoreinfo
from kdumpd.vmcore.x86_64 import X86_64

ReadMemory = Callable[[int, int], bytes]
"""Read ``size`` bytes at a kernel virtual address; raise AddressError where the dump lacks it."""

# Upper bounds of a real kernel: log_buf_len is at most LOG_BUF_LEN_MAX = 2^31, and the
# descriptor ring has 2^(log_buf_shift - PRB_AVGBITS) entries. Larger values are garbage.
MAX_LOG_BUF_LEN = 1 << 31
MAX_DESC_COUNT_BITS = 31 - 5
MAX_STRUCT_SIZE = 4096  # printk_ringbuffer is 88 bytes on 6.x, printk_log 16
_SLOTS_PER_READ = 4096  # descriptors and infos read at once: about 450 KiB on 6.x
_PLAIN_CHUNK = 1 << 20

_ULONG_BITS = 64
_FLAGS_MASK = 3 << (_ULONG_BITS - 2)
_ID_MASK = ((1 << _ULONG_BITS) - 1) ^ _FLAGS_MASK
_DESC_COMMITTED, _DESC_FINALIZED = 1, 2

# C-locale isprint() or isspace(): 0x20-0x7e and \t \n \v \f \r. Everything else is escaped.
_UNPRINTABLE = re.compile(rb"[^\t-\r -~]")
_ESCAPES = [b"\\x%02x" % (b if b < 0x80 else (b - 0x100) & 0xFFFFFFFF) for b in range(256)]


class DmesgError(VmcoreError):
    """The kernel log buffer in the dump cannot be decoded."""


class DmesgCorruptError(DmesgError):
    """The log records are inconsistent; the text yielded before this error is sound."""


def format_record(ts_nsec: int, text: bytes) -> bytes:
    """One record as makedumpfile's ``dump_record``/``dump_log_entry`` print it."""
    prefix = b"[%5d.%06d] " % (ts_nsec // 1_000_000_000, ts_nsec % 1_000_000_000 // 1000)
    body = _UNPRINTABLE.sub(lambda m: _ESCAPES[m[0][0]], text)
    return prefix + body.replace(b"\n", b"\n" + b" " * len(prefix)) + b"\n"


def iter_dmesg(info: Vmcoreinfo, read: ReadMemory) -> Iterator[bytes]:
    """The crashed kernel's log as makedumpfile writes it, in pieces."""
    if info.symbol("prb") is not None:
        return _lockless(_Mem(read), info)
    if info.symbol("log_end") is None:
        return _structured(_Mem(read), info)
    return _plain(_Mem(read), info)


def dmesg_text(info: Vmcoreinfo, read: ReadMemory) -> bytes:
    """The whole log at once (tests, small tools); the CLI streams :func:`iter_dmesg`."""
    return b"".join(iter_dmesg(info, read))


def dump_dmesg(source: DumpSource, output: str | os.PathLike[str]) -> None:
    """Write the dmesg of the kernel that crashed into SOURCE to OUTPUT (see the module doc)."""
    raw = source.vmcoreinfo_raw
    if raw is None:
        where = getattr(source, "path", "the dump")
        raise VmcoreinfoMissingError(f"{where}: no VMCOREINFO note, needed to find the log")
    info = parse_vmcoreinfo(raw)
    try:
        mem = X86_64(source, info, kernel_text_load(source))
        write_dmesg(iter_dmesg(info, mem.read_virt), output)
    except (DmesgError, VmcoreinfoMissingError) as exc:
        where = getattr(source, "path", None)  # both inputs have one; say which file it was
        if where is None or str(exc).startswith(f"{output}:"):
            raise
        raise type(exc)(f"{where}: {exc}") from None


def write_dmesg(pieces: Iterator[bytes], output: str | os.PathLike[str]) -> None:
    """Write PIECES to OUTPUT through a temporary file that is renamed once written.

    On DmesgCorruptError the sound part is kept, ended by a line that says where and why the
    log stops, and the error propagates; on any other error no file is left behind.
    """
    path = os.fspath(output)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.tmp{os.getpid()}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DmesgError(f"{path}: cannot create: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                for piece in pieces:
                    out.write(piece)
            except DmesgCorruptError as exc:
                out.write(b"\n[kdumpd: the log ends here: %s]\n" % str(exc).encode())
                out.close()
                os.replace(tmp, path)
                raise
        os.replace(tmp, path)
    except OSError as exc:
        raise DmesgError(f"{path}: cannot write: {exc.strerror}") from None
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


class _Mem:
    """Typed reads through the caller's ``read``, with errors that say what was being read."""

    def __init__(self, read: ReadMemory) -> None:
        self._read = read

    def read(self, addr: int, size: int, what: str) -> bytes:
        if not 0 <= addr < 1 << 64 or addr + size > 1 << 64:
            raise DmesgError(f"dmesg: {what} address {addr:#x} is not a kernel address")
        try:
            data = self._read(addr, size)
        except AddressError as exc:
            raise DmesgError(
                f"dmesg: cannot read {what} ({size} bytes at {addr:#x}): {exc}"
            ) from None
        if len(data) != size:
            raise DmesgError(f"dmesg: short read of {what} at {addr:#x}: {len(data)} of {size}")
        return data

    def uint(self, addr: int, size: int, what: str) -> int:
        return int.from_bytes(self.read(addr, size, what), "little")


def _field(block: bytes, offset: int, size: int, what: str) -> int:
    """An unsigned little-endian field of a structure read whole, checked against its size."""
    if offset < 0 or offset + size > len(block):
        raise DmesgError(
            f"dmesg: {what} at offset {offset} lies outside its {len(block)}-byte struct"
        )
    return int.from_bytes(block[offset : offset + size], "little")


def _struct_size(info: Vmcoreinfo, name: str, purpose: str) -> int:
    """SIZE(name), which must be a structure size a kernel could have."""
    size = info.require("SIZE", name, purpose)
    if not 0 < size <= MAX_STRUCT_SIZE:
        raise DmesgError(f"dmesg: implausible VMCOREINFO SIZE({name})={size}")
    return size


def _lockless(mem: _Mem, info: Vmcoreinfo) -> Iterator[bytes]:
    purpose = "dmesg from the lockless printk ring buffer"

    def need(kind: str, name: str) -> int:
        return info.require(kind, name, purpose)

    atomic = need("OFFSET", "atomic_long_t.counter")
    prb_addr = mem.uint(need("SYMBOL", "prb"), 8, "the prb pointer")
    prb = mem.read(prb_addr, _struct_size(info, "printk_ringbuffer", purpose), "the printk ring")
    desc_ring = need("OFFSET", "printk_ringbuffer.desc_ring")
    text_ring = need("OFFSET", "printk_ringbuffer.text_data_ring")
    count_bits = _field(
        prb, desc_ring + need("OFFSET", "prb_desc_ring.count_bits"), 4, "count_bits"
    )
    size_bits = _field(prb, text_ring + need("OFFSET", "prb_data_ring.size_bits"), 4, "size_bits")
    if count_bits > MAX_DESC_COUNT_BITS or size_bits > MAX_LOG_BUF_LEN.bit_length() - 1:
        raise DmesgError(
            f"dmesg: implausible printk ring at {prb_addr:#x}: "
            f"count_bits={count_bits} size_bits={size_bits}"
        )
    count, ring_size = 1 << count_bits, 1 << size_bits
    descs = _field(prb, desc_ring + need("OFFSET", "prb_desc_ring.descs"), 8, "descs")
    infos = _field(prb, desc_ring + need("OFFSET", "prb_desc_ring.infos"), 8, "infos")
    data = _field(prb, text_ring + need("OFFSET", "prb_data_ring.data"), 8, "data")
    head = _field(prb, desc_ring + need("OFFSET", "prb_desc_ring.head_id") + atomic, 8, "head_id")
    tail = _field(prb, desc_ring + need("OFFSET", "prb_desc_ring.tail_id") + atomic, 8, "tail_id")
    # A live ring keeps head - tail below the number of descriptors. makedumpfile walks
    # tail..head whatever they hold, which on garbage never ends; we stop instead.
    span = (head - tail) & _ID_MASK
    if (head | tail) & _FLAGS_MASK or span >= count:
        raise DmesgCorruptError(
            f"dmesg: printk ring at {prb_addr:#x} is corrupt: tail_id={tail:#x} head_id={head:#x}"
            f" for {count} descriptors"
        )

    desc_size = _struct_size(info, "prb_desc", purpose)
    info_size = _struct_size(info, "printk_info", purpose)
    state_off = need("OFFSET", "prb_desc.state_var") + atomic
    lpos = need("OFFSET", "prb_desc.text_blk_lpos")
    begin_off = lpos + need("OFFSET", "prb_data_blk_lpos.begin")
    next_off = lpos + need("OFFSET", "prb_data_blk_lpos.next")
    ts_off, len_off = need("OFFSET", "printk_info.ts_nsec"), need("OFFSET", "printk_info.text_len")

    # The ids tail..head occupy consecutive slots (mod count): read them in runs.
    done = 0
    while done <= span:
        first = (tail + done) % count
        n = min(span + 1 - done, count - first, _SLOTS_PER_READ)
        desc_block = mem.read(descs + first * desc_size, n * desc_size, "printk descriptors")
        info_block = mem.read(infos + first * info_size, n * info_size, "printk_info records")
        for i in range(n):
            desc = desc_block[i * desc_size : (i + 1) * desc_size]
            state_var = _field(desc, state_off, 8, "prb_desc.state_var")
            if state_var & _ID_MASK != (tail + done + i) & _ID_MASK or state_var >> 62 not in (
                _DESC_COMMITTED,
                _DESC_FINALIZED,
            ):
                continue
            begin = _field(desc, begin_off, 8, "text_blk_lpos.begin") % ring_size
            end = _field(desc, next_off, 8, "text_blk_lpos.next") % ring_size
            if begin == end:  # data-less record (also the FAILED/NO_LPOS markers)
                continue
            rec = info_block[i * info_size : (i + 1) * info_size]
            text_len = _field(rec, len_off, 2, "printk_info.text_len")
            if begin > end:  # the block wrapped: its data starts at offset 0
                begin = 0
            begin += 8  # the block's leading descriptor id
            if end >= begin:
                text_len = min(text_len, end - begin)
            # end < begin only in garbage; makedumpfile then reads past the ring, we stop at it
            text_len = max(0, min(text_len, ring_size - begin))
            text = mem.read(data + begin, text_len, "printk text") if text_len else b""
            yield format_record(_field(rec, ts_off, 8, "printk_info.ts_nsec"), text)
        done += n


def _record_layout(info: Vmcoreinfo) -> tuple[int, int, int, int]:
    """SIZE and ts_nsec/len/text_len offsets of ``struct printk_log`` (``struct log`` < 3.11)."""
    struct = (
        "log" if info.size("printk_log") is None and info.size("log") is not None else "printk_log"
    )
    where = f"dmesg from struct {struct} records"
    return (
        _struct_size(info, struct, where),
        info.require("OFFSET", f"{struct}.ts_nsec", where),
        info.require("OFFSET", f"{struct}.len", where),
        info.require("OFFSET", f"{struct}.text_len", where),
    )


def _log_buf(mem: _Mem, info: Vmcoreinfo, purpose: str) -> tuple[int, int]:
    """Address and length of log_buf (``char *log_buf`` and ``int log_buf_len``)."""
    buf = mem.uint(info.require("SYMBOL", "log_buf", purpose), 8, "the log_buf pointer")
    length = mem.uint(info.require("SYMBOL", "log_buf_len", purpose), 4, "log_buf_len")
    if not 0 < length <= MAX_LOG_BUF_LEN:
        raise DmesgError(f"dmesg: implausible log_buf_len={length}")
    return buf, length


def _structured(mem: _Mem, info: Vmcoreinfo) -> Iterator[bytes]:
    """Records from log_first_idx to log_next_idx; a zero ``len`` marks the wrap to offset 0.

    A sound buffer is walked in increasing offsets, wraps at most once, and after the wrap meets
    log_next_idx before log_first_idx. Anything else is a corrupt chain: the records before it are
    yielded, then DmesgCorruptError (makedumpfile also keeps those and fails). The checks bound the
    walk to log_buf_len / SIZE(printk_log) records without remembering them.
    """
    purpose = "dmesg from struct printk_log records"
    size, ts_off, len_off, text_len_off = _record_layout(info)
    first = mem.uint(info.require("SYMBOL", "log_first_idx", purpose), 4, "log_first_idx")
    stop = mem.uint(info.require("SYMBOL", "log_next_idx", purpose), 4, "log_next_idx")
    buf, length = _log_buf(mem, info, purpose)
    if size > length or max(ts_off + 8, len_off + 2, text_len_off + 2) > size:
        raise DmesgError(
            f"dmesg: implausible struct printk_log size {size} in a {length}-byte log_buf"
        )

    def corrupt(why: str, idx: int) -> DmesgCorruptError:
        return DmesgCorruptError(
            f"dmesg: log_buf is corrupt ({why}): log_buf={buf:#x} idx={idx:#x}"
        )

    idx, wrapped = first, False
    while idx != stop:
        if idx > length - size:
            raise corrupt("index outside log_buf", idx)
        if wrapped and idx > stop:
            raise corrupt("the records after the wrap run past log_next_idx", idx)
        rec = mem.read(buf + idx, size, "a printk_log record")
        if _field(rec, len_off, 2, "printk_log.len") == 0:  # end marker: the record is at 0
            if wrapped:
                raise corrupt("a second wrap of the record chain", idx)
            idx, wrapped = 0, True
            rec = mem.read(buf, size, "a printk_log record")
        rec_len = _field(rec, len_off, 2, "printk_log.len")
        text_len = min(_field(rec, text_len_off, 2, "printk_log.text_len"), length - idx - size)
        text = mem.read(buf + idx + size, text_len, "printk_log text") if text_len else b""
        yield format_record(_field(rec, ts_off, 8, "printk_log.ts_nsec"), text)
        if rec_len < size:
            raise corrupt(f"record length {rec_len} is below the header size {size}", idx)
        idx += rec_len


def _plain(mem: _Mem, info: Vmcoreinfo) -> Iterator[bytes]:
    purpose = "dmesg from the plain log_buf of kernels before 3.5"
    # log_end became `unsigned` in 2.6.25; it was `unsigned long` before.
    log_end_size = 4 if _release(info.osrelease) >= (2, 6, 25) else 8
    log_end = mem.uint(info.require("SYMBOL", "log_end", purpose), log_end_size, "log_end")
    buf, length = _log_buf(mem, info, purpose)
    if log_end < length:
        pieces = [(0, log_end)]
    else:  # the ring wrapped: oldest text from the write position on, then the start
        index = log_end & (length - 1)
        pieces = [(index, length - index), (0, index)]
    for start, size in pieces:
        for off in range(start, start + size, _PLAIN_CHUNK):
            yield mem.read(buf + off, min(_PLAIN_CHUNK, start + size - off), "log_buf")


def _release(osrelease: str) -> tuple[int, ...]:
    """(major, minor, patch) of a release string such as ``2.6.32-5-amd64``."""
    parts = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", osrelease)
    if parts is None:
        raise DmesgError(f"dmesg: cannot tell the kernel version from OSRELEASE={osrelease!r}")
    return tuple(int(p or 0) for p in parts.groups())
