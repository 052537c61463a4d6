"""The ELF reader and x86_64 translation on the genuine Debian 6.1 vmcore of ../shared/fixtures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zstandard

from kdumpd.vmcore.elf import ElfVmcore
from kdumpd.vmcore.vmcoreinfo import parse_vmcoreinfo
from kdumpd.vmcore.x86_64 import X86_64

pytestmark = pytest.mark.vmcore


def zst(path: Path) -> bytes:
    with path.open("rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


@pytest.fixture(scope="module")
def vmcore(fixture_vmcore: Path) -> ElfVmcore:
    return ElfVmcore(fixture_vmcore)


def test_layout_and_bitmap1(vmcore: ElfVmcore, shared_fixtures: Path) -> None:
    assert vmcore.max_mapnr == 163802
    assert len(vmcore.loads) == 4 and len(vmcore.prstatus) == 2
    assert vmcore.original_pages() == 144296
    bitmap = vmcore.present_bitmap()
    assert int(np.unpackbits(bitmap).sum()) == 130936
    assert bitmap.tobytes() == zst(shared_fixtures / "vmcore-6.1-kexec.bitmap1.zst")[: len(bitmap)]


def test_vmcoreinfo_matches_the_reference_text(vmcore: ElfVmcore, shared_fixtures: Path) -> None:
    text = (shared_fixtures / "vmcore-6.1-kexec.vmcoreinfo.txt").read_bytes()
    assert vmcore.vmcoreinfo_raw == text
    assert vmcore.vmcoreinfo == parse_vmcoreinfo(text)


def test_kernel_text_reads_the_same_through_both_segments(vmcore: ElfVmcore) -> None:
    text, ram = vmcore.loads[0], vmcore.loads[2]
    assert ram.paddr <= text.paddr < ram.paddr + ram.filesz
    pfn = text.paddr // 4096 + 17
    first = bytes(vmcore.read_pages(pfn, 2))
    with open(vmcore.path, "rb") as f:
        f.seek(ram.offset + pfn * 4096 - ram.paddr)  # type: ignore[operator]
        assert f.read(8192) == first


def test_virtual_reads(vmcore: ElfVmcore) -> None:
    info = vmcore.vmcoreinfo
    assert info is not None
    text = vmcore.loads[0]
    mm = X86_64(vmcore, info, text_load=(text.vaddr, text.paddr))
    uts = info.require("SYMBOL", "init_uts_ns", "test") + info.require(
        "OFFSET", "uts_namespace.name", "test"
    )
    release = mm.read_virt(uts + 2 * 65, 65).split(b"\0")[0].decode()
    assert release == info.osrelease
    # The direct map (randomised page_offset_base) through the page tables.
    ram = vmcore.loads[2]
    assert mm.vtop(ram.vaddr + 0x12345) == ram.paddr + 0x12345
    assert mm.read_virt(ram.vaddr, 64) == vmcore.read_phys(ram.paddr, 64)
    # phys_base derived from the text PT_LOAD agrees with VMCOREINFO's NUMBER(phys_base).
    assert text.paddr - (text.vaddr - 0xFFFFFFFF80000000) == info.number("phys_base")
