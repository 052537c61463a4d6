"""VMCOREINFO parsing: typed values, leniency about unknown lines, strictness about values."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdumpd.vmcore.errors import VmcoreinfoError, VmcoreinfoMissingError
from kdumpd.vmcore.vmcoreinfo import parse_vmcoreinfo

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
FIXTURE = SHARED / "fixtures/vmcore-6.1-kexec.vmcoreinfo.txt"


def test_fixture_note_typed_values() -> None:
    info = parse_vmcoreinfo(FIXTURE.read_bytes())
    assert info.osrelease == "6.1.0-56-amd64"
    assert info.page_size == 4096
    assert info.build_id == "eb4fbcd037e7253717950bf2b93bd5566f47c56f"
    assert info.kernel_offset == 0x14400000
    assert info.crash_time == 1795678246
    assert info.symbol("init_top_pgt") == 0xFFFFFFFF96E10000
    assert info.symbol("mem_section") == 0xFFFF8ADC27FD2000
    assert info.size("page") == 64
    assert info.offset("page._mapcount") == 48
    assert info.length("zone.free_area") == 11
    assert info.number("phys_base") == -203423744
    assert info.number("PAGE_BUDDY_MAPCOUNT_VALUE") == -129
    assert info.number("PG_head_mask") == 65536
    assert info.number("no_such") is None


def test_unknown_and_odd_lines_are_kept_or_ignored() -> None:
    info = parse_vmcoreinfo(
        b"OSRELEASE=6.12.0\nPAGESIZE=4096\nno equals sign\n\nCONFIG_X86_PAE=y\n"
        b"FUTURE(thing)=whatever\nNUMBER(VMALLOC_START)=0xffffc90000000000\nOSRELEASE=second\n"
        b"SIZE(page)=0x40\nNUMBER(x)=5"
    )
    assert info.osrelease == "6.12.0"  # the first line of a key wins, as in makedumpfile
    assert info.lines["CONFIG_X86_PAE"] == "y"
    assert info.lines["FUTURE(thing)"] == "whatever"
    assert info.number("VMALLOC_START") == 0xFFFFC90000000000
    assert info.size("page") == 64
    assert info.number("x") == 5  # no trailing newline


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (b"OSRELEASE=a\nPAGESIZE=4096\nSYMBOL(x)=0xzz\n", "line 3: SYMBOL(x)=0xzz: bad SYMBOL"),
        (b"OSRELEASE=a\nPAGESIZE=4096\nOFFSET(p.q)=-8\n", "line 3: OFFSET(p.q)=-8: bad OFFSET"),
        (b"OSRELEASE=a\nPAGESIZE=4096\nNUMBER(n)=\n", "line 3: NUMBER(n)=: bad NUMBER"),
        (b"OSRELEASE=a\nPAGESIZE=4096\nSIZE(p)=99999999999999999999999\n", "bad SIZE"),
        (b"OSRELEASE=a\nPAGESIZE=4k\n", "line 2: PAGESIZE=4k: not a number"),
        (b"OSRELEASE=a\nPAGESIZE=4000\n", "PAGESIZE=4000 is not a page size"),
        (b"OSRELEASE=a\nPAGESIZE=4096\nKERNELOFFSET=xyz\n", "KERNELOFFSET=xyz: not hex"),
        (b"OSRELEASE=a\nPAGESIZE=4096\nCRASHTIME=soon\n", "CRASHTIME=soon: not a number"),
        (b"OSRELEASE=\xe9\nPAGESIZE=4096\n", "non-ASCII byte at offset 10"),
    ],
)
def test_malformed_values_name_the_line(text: bytes, words: str) -> None:
    with pytest.raises(VmcoreinfoError) as info:
        parse_vmcoreinfo(text, "dump")
    assert words in str(info.value) and str(info.value).startswith("dump: ")


@pytest.mark.parametrize("text", [b"PAGESIZE=4096\n", b"OSRELEASE=6.1\n", b""])
def test_basic_keys_are_required(text: bytes) -> None:
    with pytest.raises(VmcoreinfoMissingError):
        parse_vmcoreinfo(text)


def test_require_names_key_and_purpose() -> None:
    info = parse_vmcoreinfo(b"OSRELEASE=a\nPAGESIZE=4096\n")
    with pytest.raises(VmcoreinfoMissingError, match=r"lacks NUMBER\(PG_lru\), needed for -d 2"):
        info.require("NUMBER", "PG_lru", "-d 2")
