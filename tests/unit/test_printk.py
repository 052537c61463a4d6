"""dmesg extraction on kernel log buffers built in memory (tests/unit/printk_images.py)."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from printk_images import (
    COMMITTED,
    KERNEL,
    REUSABLE,
    Memory,
    Record,
    lockless_image,
    structured_image,
)

from kdumpd.errors import KdumpdError
from kdumpd.vmcore.errors import VmcoreinfoMissingError
from kdumpd.vmcore.printk import (
    DmesgCorruptError,
    DmesgError,
    dmesg_text,
    format_record,
    iter_dmesg,
    write_dmesg,
)
from kdumpd.vmcore.vmcoreinfo import parse_vmcoreinfo


def expected(records: list[Record]) -> bytes:
    """What makedumpfile prints for printable single-line records: written out by hand."""
    out = b""
    for r in records:
        sec, usec = divmod(r.ts_nsec // 1000, 1_000_000)
        out += f"[{sec:5d}.{usec:06d}] ".encode() + r.text + b"\n"
    return out


def recs(n: int, start: int = 0) -> list[Record]:
    return [Record(1_000_000 * i + 7, b"message %d" % i) for i in range(start, start + n)]


# -- the text of one record -----------------------------------------------------------------


def test_prefix_is_seconds_width_5_and_microseconds() -> None:
    assert format_record(0, b"x") == b"[    0.000000] x\n"
    assert format_record(12_345_678_901, b"x") == b"[   12.345678] x\n"
    assert format_record(123_456_000_000_000, b"") == b"[123456.000000] \n"


def test_continuation_lines_are_indented_by_the_prefix_width() -> None:
    assert format_record(1_500_000_000, b"a\nb\n") == (
        b"[    1.500000] a\n               b\n               \n"
    )


def test_unprintable_bytes_are_escaped_as_makedumpfile_does() -> None:
    # whitespace other than \n stays raw; control bytes become \xNN; bytes >= 0x80 pass
    # through a signed char, so %02x prints them sign-extended.
    assert format_record(0, b"t\tv\x0bf\x0cr\rz\x00\x1b\x7f\xe9\xff") == (
        b"[    0.000000] t\tv\x0bf\x0cr\rz\\x00\\x1b\\x7f\\xffffffe9\\xffffffff\n"
    )


# -- lockless ring (5.10+) --------------------------------------------------------------------


def test_lockless_ring_prints_every_record_from_tail_to_head() -> None:
    image = lockless_image(recs(5))
    assert dmesg_text(image.info, image.memory.read) == expected(recs(5))


def test_lockless_ring_after_many_laps_prints_the_surviving_records() -> None:
    records = recs(100)
    image = lockless_image(records, count_bits=4, size_bits=9)
    assert 0 < len(image.kept) <= 16
    assert image.kept == records[-len(image.kept) :]
    assert dmesg_text(image.info, image.memory.read) == expected(image.kept)


def test_lockless_ring_reads_wrapped_blocks_from_offset_0() -> None:
    # 40-byte blocks in a 256-byte ring: the 7th block does not fit at 240 and wraps.
    records = [Record(i, b"%031d" % i) for i in range(9)]
    image = lockless_image(records, count_bits=4, size_bits=8)
    assert dmesg_text(image.info, image.memory.read) == expected(image.kept)
    assert len(image.kept) >= 5


def test_lockless_ring_skips_reserved_reusable_and_foreign_slots() -> None:
    records = recs(6)
    records[1].state = REUSABLE
    records[2].state = 0  # reserved: still being written
    records[3].state = COMMITTED  # committed counts as readable
    image = lockless_image(records)
    # slot of record 4 holds an id from another lap: skipped
    slot = 4 % 16
    struct.pack_into("<Q", image.memory.regions[image.addrs["descs"]], 24 * slot, 2 << 62 | 20)
    want = [records[0], records[3], records[5]]
    assert dmesg_text(image.info, image.memory.read) == expected(want)


def test_lockless_text_len_is_cut_to_the_data_block() -> None:
    records = [Record(5, b"abcdefgh", claimed_len=1000), Record(6, b"xyz", claimed_len=2)]
    image = lockless_image(records)
    out = dmesg_text(image.info, image.memory.read)
    # the 8-byte text fills its block exactly; "xyz" is cut to what text_len claims
    assert out == b"[    0.000000] abcdefgh\n[    0.000000] xy\n"


def test_lockless_ring_with_dataless_records() -> None:
    image = lockless_image(recs(3))
    descs = image.memory.regions[image.addrs["descs"]]
    struct.pack_into("<QQ", descs, 24 * 1 + 8, 1, 1)  # FAILED_LPOS: begin == next
    assert dmesg_text(image.info, image.memory.read) == expected([recs(3)[0], recs(3)[2]])


def test_lockless_ids_that_wrap_the_62_bit_id_space() -> None:
    records = recs(6)
    image = lockless_image(records, first_id=(1 << 62) - 3)
    assert dmesg_text(image.info, image.memory.read) == expected(records)


def test_lockless_corrupt_head_is_a_typed_error_not_a_long_walk() -> None:
    image = lockless_image(recs(3))
    prb = image.memory.regions[image.addrs["prb"]]
    struct.pack_into("<Q", prb, 24, 1 << 40)  # head_id far beyond tail + 16 descriptors
    with pytest.raises(DmesgCorruptError, match="tail_id=0x0 head_id=0x10000000000"):
        dmesg_text(image.info, image.memory.read)


def test_lockless_missing_key_names_it() -> None:
    image = lockless_image(recs(1))
    text = "\n".join(line for line in image.keys.splitlines() if "prb_desc.state_var" not in line)
    with pytest.raises(VmcoreinfoMissingError, match=r"OFFSET\(prb_desc.state_var\)"):
        dmesg_text(parse_vmcoreinfo(text.encode()), image.memory.read)


def test_lockless_unreadable_ring_names_what_was_read() -> None:
    image = lockless_image(recs(2))
    del image.memory.regions[image.addrs["infos"]]
    with pytest.raises(DmesgError, match="cannot read printk_info records"):
        dmesg_text(image.info, image.memory.read)


# -- struct printk_log records (3.5-5.9) ------------------------------------------------------


def test_structured_log_without_wrap() -> None:
    image = structured_image(recs(5), buf_len=4096)
    assert image.kept == recs(5)
    assert dmesg_text(image.info, image.memory.read) == expected(recs(5))


def test_structured_log_after_wraps() -> None:
    records = [Record(i * 1000, b"line %d " % i + b"x" * (i % 23)) for i in range(60)]
    image = structured_image(records, buf_len=512)
    assert 3 < len(image.kept) < 60
    assert dmesg_text(image.info, image.memory.read) == expected(image.kept)


def test_structured_log_corrupt_length_keeps_the_records_before_it() -> None:
    image = structured_image(recs(4), buf_len=4096)
    # the third record's length is smaller than a header: the chain is broken there
    second = struct.unpack_from("<H", image.buf, 8)[0]
    third = second + struct.unpack_from("<H", image.buf, second + 8)[0]
    struct.pack_into("<H", image.buf, third + 8, 3)
    out: list[bytes] = []
    with pytest.raises(DmesgCorruptError, match="record length 3 is below the header size 16"):
        out.extend(iter_dmesg(image.info, image.memory.read))
    assert b"".join(out) == expected(recs(3))


def test_structured_log_second_wrap_is_a_cycle() -> None:
    image = structured_image(recs(4), buf_len=4096)
    # a wrap marker after the second record sends the walk back to offset 0 twice over
    second = struct.unpack_from("<H", image.buf, 8)[0]
    struct.pack_into("<H", image.buf, second + 8, 0)
    indexes = image.memory.regions[KERNEL]
    struct.pack_into("<I", indexes, 12, 8)  # log_first_idx inside the first record: never met
    with pytest.raises(DmesgCorruptError, match="log_buf is corrupt"):
        dmesg_text(image.info, image.memory.read)


def test_structured_log_falls_back_to_struct_log_names() -> None:
    image = structured_image(recs(2), buf_len=1024)
    text = image.keys.replace("printk_log", "log")
    assert dmesg_text(parse_vmcoreinfo(text.encode()), image.memory.read) == expected(recs(2))


# -- plain character ring (< 3.5) -------------------------------------------------------------


def plain_image(text: bytes, log_end: int, buf_len: int, release: str) -> tuple[object, Memory]:
    wide = release.startswith("2.6.2") and int(release.split(".")[2].split("-")[0]) < 25
    memory = Memory()
    base = KERNEL + 0x10000
    memory.put(KERNEL, struct.pack("<QI", base, buf_len))
    memory.put(KERNEL + 0x100, struct.pack("<Q" if wide else "<I", log_end))
    memory.put(base, text)
    keys = (
        f"OSRELEASE={release}\nPAGESIZE=4096\nSYMBOL(log_buf)={KERNEL:x}\n"
        f"SYMBOL(log_buf_len)={KERNEL + 8:x}\nSYMBOL(log_end)={KERNEL + 0x100:x}\n"
    )
    return parse_vmcoreinfo(keys.encode()), memory


@pytest.mark.parametrize("release", ["3.2.0-4-amd64", "2.6.24-1-amd64"])
def test_plain_ring_before_it_filled(release: str) -> None:
    info, memory = plain_image(b"<6>hello\n<4>world\n" + bytes(46), 18, 64, release)
    assert dmesg_text(info, memory.read) == b"<6>hello\n<4>world\n"  # type: ignore[arg-type]


def test_plain_ring_rotated_after_it_filled() -> None:
    buf = b"NEW-TEXT" + b"old-text" * 7
    info, memory = plain_image(buf, 64 * 5 + 8, 64, "3.4.0")
    assert dmesg_text(info, memory.read) == b"old-text" * 7 + b"NEW-TEXT"  # type: ignore[arg-type]


# -- fuzzing: any bytes give text or a typed error, in bounded work ---------------------------


def _run_bounded(info: object, memory: Memory) -> None:
    try:
        out = dmesg_text(info, memory.read)  # type: ignore[arg-type]
    except KdumpdError:
        return
    assert isinstance(out, bytes)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_lockless_ring_with_corrupted_bytes(data: st.DataObject) -> None:
    image = lockless_image(recs(data.draw(st.integers(1, 40))), count_bits=4, size_bits=9)
    for _ in range(data.draw(st.integers(1, 12))):
        name = data.draw(st.sampled_from(["prb", "descs", "infos", "data"]))
        region = image.memory.regions[image.addrs[name]]
        at = data.draw(st.integers(0, len(region) - 1))
        patch = data.draw(st.binary(min_size=1, max_size=16))
        region[at : at + len(patch)] = patch[: len(region) - at]
    _run_bounded(image.info, image.memory)
    # every record costs at most two reads of descriptors/infos and one of text
    assert image.memory.reads <= 2 + 3 * 16 + 4


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=88, max_size=88), st.binary(min_size=0, max_size=2048))
def test_fuzz_lockless_ring_from_random_memory(prb: bytes, rest: bytes) -> None:
    image = lockless_image(recs(1))
    image.memory.regions[image.addrs["prb"]] = bytearray(prb)
    for name in ("descs", "infos", "data"):
        image.memory.regions[image.addrs[name]] = bytearray(rest)
    _run_bounded(image.info, image.memory)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_fuzz_structured_log_with_corrupted_bytes(data: st.DataObject) -> None:
    image = structured_image(recs(data.draw(st.integers(1, 40))), buf_len=512)
    for _ in range(data.draw(st.integers(1, 12))):
        at = data.draw(st.integers(0, 511))
        patch = data.draw(st.binary(min_size=1, max_size=8))
        image.buf[at : at + len(patch)] = patch[: 512 - at]
    indexes = image.memory.regions[KERNEL]
    if data.draw(st.booleans()):
        indexes[8:20] = data.draw(st.binary(min_size=12, max_size=12))
    _run_bounded(image.info, image.memory)
    # at most one record per 16-byte header slot, twice over (before and after the wrap)
    assert image.memory.reads <= 8 + 3 * 2 * 512 // 16


FUZZ_KEYS = [
    "SIZE(printk_ringbuffer)",
    "OFFSET(printk_ringbuffer.text_data_ring)",
    "OFFSET(prb_desc_ring.count_bits)",
    "OFFSET(prb_desc_ring.head_id)",
    "SIZE(prb_desc)",
    "SIZE(printk_info)",
    "OFFSET(printk_info.text_len)",
    "OFFSET(prb_desc.text_blk_lpos)",
    "OFFSET(atomic_long_t.counter)",
    "OFFSET(prb_data_ring.size_bits)",
]


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(FUZZ_KEYS), st.integers(0, 1 << 20)))
def test_fuzz_lockless_vmcoreinfo_values(values: dict[str, int]) -> None:
    image = lockless_image(recs(8))
    lines = image.keys.splitlines()
    for i, line in enumerate(lines):
        key = line.partition("=")[0]
        if key in values:
            lines[i] = f"{key}={values[key]}"
    _run_bounded(parse_vmcoreinfo("\n".join(lines).encode()), image.memory)


# -- writing the file -------------------------------------------------------------------------


def test_write_dmesg_keeps_sound_records_of_a_corrupt_log_and_says_so(tmp_path: Path) -> None:
    image = structured_image(recs(4), buf_len=4096)
    second = struct.unpack_from("<H", image.buf, 8)[0]
    struct.pack_into("<H", image.buf, second + 8, 3)
    out = tmp_path / "dmesg.txt"
    with pytest.raises(DmesgCorruptError):
        write_dmesg(iter_dmesg(image.info, image.memory.read), out)
    text = out.read_bytes()
    assert text.startswith(expected(recs(2)) + b"\n[kdumpd: the log ends here: dmesg: log_buf is")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dmesg.txt"]


def test_write_dmesg_leaves_nothing_when_the_log_cannot_be_read(tmp_path: Path) -> None:
    image = lockless_image(recs(3))
    del image.memory.regions[image.addrs["data"]]
    with pytest.raises(DmesgError, match="cannot read printk text"):
        write_dmesg(iter_dmesg(image.info, image.memory.read), tmp_path / "dmesg.txt")
    assert list(tmp_path.iterdir()) == []


def test_write_dmesg_into_a_missing_directory_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DmesgError, match=r"no/dmesg.txt: cannot create: No such file"):
        write_dmesg(iter([b"x"]), tmp_path / "no" / "dmesg.txt")


def test_write_dmesg_replaces_the_file_whole(tmp_path: Path) -> None:
    image = lockless_image(recs(3))
    out = tmp_path / "dmesg.txt"
    out.write_bytes(b"old")
    write_dmesg(iter_dmesg(image.info, image.memory.read), out)
    assert out.read_bytes() == expected(recs(3))
    assert out.stat().st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
