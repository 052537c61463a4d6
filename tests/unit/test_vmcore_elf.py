"""ElfVmcore on synthetic vmcores: layouts, physical reads, notes, and typed errors."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdumpd.vmcore.elf import ElfVmcore
from kdumpd.vmcore.errors import (
    VmcoreFormatError,
    VmcoreinfoError,
    VmcoreMachineError,
    VmcoreTruncatedError,
)
from tests.unit.vmcore_synth import Seg, build, default_notes, expected_byte

PAGE = 4096


def write(tmp_path: Path, data: bytes, name: str = "vmcore") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def expected(paddr: int, size: int) -> bytes:
    return bytes(expected_byte(a) for a in range(paddr, paddr + size))


def bits(bitmap: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.unpackbits(bitmap, bitorder="little"))]


def test_kernel_layout_maps_phys_and_notes(tmp_path: Path) -> None:
    segs = [Seg(0x1000, 3 * PAGE), Seg(0x10000, 4 * PAGE)]
    with ElfVmcore(write(tmp_path, build(segs))) as vm:
        assert vm.page_size == PAGE
        assert vm.max_mapnr == 0x14
        assert bits(vm.present_bitmap()) == [1, 2, 3, 16, 17, 18, 19]
        assert vm.read_phys(0x1800, 100) == expected(0x1800, 100)
        assert bytes(vm.read_pages(0x11, 2)) == expected(0x11000, 2 * PAGE)
        assert len(vm.prstatus) == 2 and vm.prstatus[1][:1] == b"\x01"
        assert vm.vmcoreinfo is not None and vm.vmcoreinfo.osrelease == "6.1.0-test"
        assert vm.notes == default_notes()


def test_holes_and_straddling_reads_are_zero_filled(tmp_path: Path) -> None:
    segs = [Seg(0x1000, PAGE), Seg(0x3000, PAGE)]
    with ElfVmcore(write(tmp_path, build(segs))) as vm:
        data = bytes(vm.read_pages(1, 3))
        assert data[:PAGE] == expected(0x1000, PAGE)
        assert data[PAGE : 2 * PAGE] == bytes(PAGE)
        assert data[2 * PAGE :] == expected(0x3000, PAGE)
        assert vm.read_phys(0x100000, 16) == bytes(16)
        assert vm.backed_extents() == [(0x1000, 0x2000), (0x3000, 0x4000)]


def test_first_segment_wins_where_segments_overlap(tmp_path: Path) -> None:
    # Kernel-text PT_LOAD first, overlapping the direct-map one, as /proc/vmcore has it.
    text = Seg(0x4000, 2 * PAGE, vaddr=0xFFFFFFFF81000000)
    ram = Seg(0x1000, 8 * PAGE, vaddr=0xFFFF888000001000)
    with ElfVmcore(write(tmp_path, build([text, ram]))) as vm:
        assert bits(vm.present_bitmap()) == list(range(1, 9))
        assert vm.original_pages() == 10
        assert vm.backed_extents() == [(0x1000, 0x4000), (0x4000, 0x6000), (0x6000, 0x9000)]
        assert bytes(vm.read_pages(1, 8)) == expected(0x1000, 8 * PAGE)


def test_qemu_layout_phoff_unaligned_data_and_missing_ranges(tmp_path: Path) -> None:
    segs = [
        Seg(0, 2 * PAGE),
        Seg(0x2000, 2 * PAGE, filesz=PAGE + 100),  # block boundary: filesz < memsz
        Seg(0x8000, 4 * PAGE, no_data=True),  # range QEMU did not save: p_offset -1
    ]
    with ElfVmcore(write(tmp_path, build(segs, qemu=True))) as vm:
        assert bits(vm.present_bitmap()) == [0, 1, 2, 3, 8, 9, 10, 11]
        assert vm.read_phys(0x10, 32) == expected(0x10, 32)
        page3 = vm.read_phys(0x3000, PAGE)
        assert page3[:100] == expected(0x3000, 100) and page3[100:] == bytes(PAGE - 100)
        assert bytes(vm.read_pages(8, 1)) == bytes(PAGE)
        assert vm.vmcoreinfo is not None


def test_pn_xnum_takes_the_count_from_section_header_0(tmp_path: Path) -> None:
    with ElfVmcore(write(tmp_path, build([Seg(0, PAGE), Seg(PAGE, PAGE)], xnum=True))) as vm:
        assert len(vm.loads) == 2
        assert vm.read_phys(PAGE, 8) == expected(PAGE, 8)


def test_mmap_windows_follow_reads(tmp_path: Path) -> None:
    # 600 pages read in order through windows smaller than the file.
    with ElfVmcore(write(tmp_path, build([Seg(0, 600 * PAGE)]))) as vm:
        vm._window._window = 64 * 1024
        for pfn in range(0, 600, 7):
            assert bytes(vm.read_pages(pfn, 3))[:64] == expected(pfn * PAGE, 64)


def test_missing_vmcoreinfo_is_none(tmp_path: Path) -> None:
    with ElfVmcore(write(tmp_path, build([Seg(0, PAGE)], default_notes(None)))) as vm:
        assert vm.vmcoreinfo is None and vm.vmcoreinfo_raw is None
        assert vm.page_size == PAGE


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", VmcoreFormatError, "not an ELF file"),
        (b"garbage" * 100, VmcoreFormatError, "not an ELF file"),
        (b"\x7fELF\x02\x01\x01", VmcoreTruncatedError, "truncated inside the ELF header"),
        (build([Seg(0, PAGE)], machine=183), VmcoreMachineError, "EM_AARCH64 is not x86_64"),
        (build([Seg(0, PAGE)], elfclass=1), VmcoreFormatError, "not ELF64"),
        (build([Seg(0, 4 * PAGE)])[:-100], VmcoreTruncatedError, "is truncated"),
        (build([Seg(0, PAGE)])[:100], VmcoreTruncatedError, "program headers end past"),
        (
            build([Seg(0, PAGE)], default_notes(b"OSRELEASE=x\nPAGESIZE=4096\nSIZE(page)=6x4\n")),
            VmcoreinfoError,
            "line 3: SIZE(page)=6x4",
        ),
        (
            build([Seg(0, PAGE)], b"\x05\0\0\0\xff\xff\0\0\x01\0\0\0CORE\0"),
            VmcoreFormatError,
            "note",
        ),
    ],
)
def test_bad_input_gives_a_one_line_typed_error(
    tmp_path: Path, data: bytes, error: type[Exception], words: str
) -> None:
    path = write(tmp_path, data)
    with pytest.raises(error) as info:
        ElfVmcore(path)
    message = str(info.value)
    assert words in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize(("lo", "hi"), [(0, 1), (3, 5), (0, 8), (5, 21), (8, 64), (7, 9), (4, 4)])
def test_set_bit_range(lo: int, hi: int) -> None:
    from kdumpd.vmcore.elf import set_bit_range

    bitmap = np.zeros(8, dtype=np.uint8)
    set_bit_range(bitmap, lo, hi)
    assert bits(bitmap) == list(range(lo, hi))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 60), st.integers(1, 30)), min_size=1, max_size=12))
def test_overlapping_segments_resolve_to_the_first_match(spans: list[tuple[int, int]]) -> None:
    from kdumpd.vmcore.elf import LoadSegment, _resolve_extents

    loads = [LoadSegment(lo, lo, n, n, 1000 * i) for i, (lo, n) in enumerate(spans)]
    extents = _resolve_extents(loads)
    resolved = {}
    for e in extents:
        for a in range(e.start, e.end):
            resolved[a] = e.offset + a - e.start
    naive = {}
    for seg in loads:
        for a in range(seg.paddr, seg.paddr + seg.filesz):
            naive.setdefault(a, (seg.offset or 0) + a - seg.paddr)
    assert resolved == naive
    assert all(a.end <= b.start for a, b in itertools.pairwise(extents))


def test_reads_fall_back_to_pread_when_mmap_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mmap

    def refuse(*args: object, **kwargs: object) -> mmap.mmap:
        raise OSError(19, "No such device")

    monkeypatch.setattr(mmap, "mmap", refuse)
    with ElfVmcore(write(tmp_path, build([Seg(0, 16 * PAGE)]))) as vm:
        assert bytes(vm.read_pages(3, 5)) == expected(3 * PAGE, 5 * PAGE)
        assert vm.read_phys(0x10, 8) == expected(0x10, 8)
