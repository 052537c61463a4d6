"""Fuzz the ELF header, note and VMCOREINFO parsers: only typed errors, no hang, bounded memory."""

from __future__ import annotations

import resource
import struct
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdumpd.vmcore.elf import ElfVmcore
from kdumpd.vmcore.errors import VmcoreError
from kdumpd.vmcore.notes import parse_notes
from kdumpd.vmcore.vmcoreinfo import parse_vmcoreinfo
from tests.unit.vmcore_synth import Seg, build, default_notes

BASE = build([Seg(0x1000, 2 * 4096), Seg(0x4000, 4096)], qemu=False)
QEMU = build([Seg(0, 4096), Seg(0x2000, 4096, filesz=100)], qemu=True)
MAX_RSS_GROWTH_KB = 64 * 1024

FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def open_bytes(data: bytes) -> None:
    with tempfile.NamedTemporaryFile() as f:
        f.write(data)
        f.flush()
        try:
            with ElfVmcore(Path(f.name)) as vm:
                vm.read_phys(0, 8192)
                vm.present_ranges()
                if vm.max_mapnr < 1 << 24:
                    vm.present_bitmap()
        except VmcoreError as exc:
            assert "\n" not in str(exc)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from([BASE, QEMU])))
    # Overwrite header/phdr/note words with arbitrary or extreme values.
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(0, min(len(data), 4096 + 512) - 8))
        extreme = st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, (1 << 64) - 1, 1 << 40])
        value = draw(extreme | st.integers(0, (1 << 64) - 1))
        data[pos : pos + 8] = struct.pack("<Q", value)
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


@FUZZ
@given(mutated())
def test_elf_reader_mutations(data: bytes) -> None:
    before = rss_kb()
    open_bytes(data)
    assert rss_kb() - before < MAX_RSS_GROWTH_KB


@FUZZ
@given(st.binary(max_size=512))
def test_elf_reader_random_bytes(data: bytes) -> None:
    open_bytes(b"\x7fELF\x02\x01" + data)


@FUZZ
@given(st.binary(max_size=2048))
def test_note_parser(data: bytes) -> None:
    try:
        notes = parse_notes(data + default_notes())
    except VmcoreError:
        return
    assert sum(len(n.desc) for n in notes) <= len(data) + len(default_notes())


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "OSRELEASE",
                    "PAGESIZE",
                    "SYMBOL(x)",
                    "SIZE(page)",
                    "NUMBER(n)",
                    "OFFSET(a.b)",
                    "LENGTH(l)",
                    "KERNELOFFSET",
                    "CRASHTIME",
                    "BUILD-ID",
                    "X",
                    "",
                ]
            ),
            st.text(alphabet="0123456789abcdefxX-=()\x00\xff ", max_size=24),
        ),
        max_size=30,
    )
)
def test_vmcoreinfo_parser(lines: list[tuple[str, str]]) -> None:
    text = "\n".join(f"{k}={v}" for k, v in lines).encode("latin-1")
    try:
        info = parse_vmcoreinfo(text)
    except VmcoreError as exc:
        assert "\n" not in str(exc)
        return
    assert info.page_size & (info.page_size - 1) == 0
