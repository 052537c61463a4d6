"""kdumpd-capture on vmcores the project generates (tests/vmcores.py): Debian 12 6.1 and
Debian 13 6.12 captured by a real crash kernel, and a QEMU dump-guest-memory ELF."""

from __future__ import annotations

from pathlib import Path

import pytest
from capture_check import assert_same_pages_libkdumpfile, run_capture
from vmcores import GeneratedVmcore

from kdumpd.dumpfile.kdump_reader import KdumpSource
from kdumpd.dumpfile.pages import popcount

pytestmark = pytest.mark.vmcore


def test_every_kept_page_reads_back(kexec_vmcore: GeneratedVmcore, tmp_path: Path) -> None:
    out = tmp_path / "dump"
    proc = run_capture("-d", "31", "--message-level", "0", kexec_vmcore.vmcore, out)
    assert proc.returncode == 0, proc.stderr.decode()
    with KdumpSource(str(out)) as ours:
        kept = popcount(ours.present_bitmap())
    assert assert_same_pages_libkdumpfile(out, kexec_vmcore.vmcore) == kept


def test_6_1_lzo_dump_is_byte_identical_to_makedumpfile(
    vmcore_6_1_1g: GeneratedVmcore, tmp_path: Path
) -> None:
    out = tmp_path / "dump"
    proc = run_capture("-l", "-d", "31", "--message-level", "0", vmcore_6_1_1g.vmcore, out)
    assert proc.returncode == 0, proc.stderr.decode()
    assert out.read_bytes() == vmcore_6_1_1g.reference_kdump.read_bytes()


def test_qemu_elf_input(vmcore_qemu: GeneratedVmcore, tmp_path: Path) -> None:
    """QEMU's own ELF layout (e_phoff 192, vaddr = paddr) as input, without the rewrite that
    makedumpfile needs; the pages kept are makedumpfile's and read back unchanged."""
    out = tmp_path / "dump"
    proc = run_capture("-d", "31", "--message-level", "0", vmcore_qemu.vmcore, out)
    assert proc.returncode == 0, proc.stderr.decode()
    with KdumpSource(str(out)) as ours, KdumpSource(str(vmcore_qemu.reference_kdump)) as ref:
        assert (ours.present_bitmap() == ref.present_bitmap()).all()
        assert (ours.ram_bitmap() == ref.ram_bitmap()).all()
        kept = popcount(ours.present_bitmap())
    assert assert_same_pages_libkdumpfile(out, vmcore_qemu.vmcore) == kept
