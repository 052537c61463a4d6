"""dmesg of real vmcores, compared byte for byte with Debian makedumpfile 1.7.2 --dump-dmesg.

The references: ../shared/fixtures/vmcore-6.1-kexec.dmesg.txt and each generated vmcore's
dmesg.txt, both written by makedumpfile --dump-dmesg (in the crash kernel on /proc/vmcore, or on
this host for the QEMU dump).
"""

from __future__ import annotations

import mmap
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from vmcores import GeneratedVmcore

from kdumpd.dumpfile.kdump_reader import KdumpSource
from kdumpd.vmcore.elf import ElfVmcore
from kdumpd.vmcore.errors import VmcoreinfoMissingError
from kdumpd.vmcore.printk import dump_dmesg

pytestmark = pytest.mark.vmcore


def extract(source_path: Path, out: Path, kdump: bool = False) -> bytes:
    source = KdumpSource(str(source_path)) if kdump else ElfVmcore(source_path)
    try:
        dump_dmesg(source, out)
    finally:
        source.close()
    return out.read_bytes()


def test_fixture_dmesg_is_identical_to_makedumpfile(
    fixture_vmcore: Path, shared_fixtures: Path, tmp_path: Path
) -> None:
    want = (shared_fixtures / "vmcore-6.1-kexec.dmesg.txt").read_bytes()
    assert extract(fixture_vmcore, tmp_path / "dmesg.txt") == want


def test_unprintable_bytes_are_escaped_exactly_as_makedumpfile_does(
    fixture_vmcore: Path, tmp_path: Path
) -> None:
    # A copy of the fixture whose "Command line:" record holds a control byte, a byte >= 0x80
    # (makedumpfile prints it sign-extended) and DEL; tab stays as it is.
    copy = tmp_path / "vmcore"
    shutil.copyfile(fixture_vmcore, copy)
    needle = b"Command line: console=ttyS0"
    with copy.open("r+b") as f, mmap.mmap(f.fileno(), 0) as mem:
        at = mem.find(needle)
        assert at >= 0
        while at >= 0:
            mem[at + 14 : at + 18] = b"\x01\xe9\x7f\t"
            at = mem.find(needle, at + 1)
    mdf = tmp_path / "mdf.txt"
    subprocess.run(
        ["makedumpfile", "--dump-dmesg", str(copy), str(mdf)], capture_output=True, check=True
    )
    ours = extract(copy, tmp_path / "ours.txt")
    assert b"Command line: \\x01\\xffffffe9\\x7f\tole=ttyS0" in ours
    assert ours == mdf.read_bytes()


def test_generated_kexec_vmcore_dmesg(kexec_vmcore: GeneratedVmcore, tmp_path: Path) -> None:
    assert extract(kexec_vmcore.vmcore, tmp_path / "dmesg.txt") == kexec_vmcore.dmesg.read_bytes()


def test_dmesg_from_makedumpfiles_kdump_output(
    kexec_vmcore: GeneratedVmcore, tmp_path: Path
) -> None:
    # -d 31 keeps the kernel's own pages (log buffer, page tables): the log is the same
    got = extract(kexec_vmcore.reference_kdump, tmp_path / "dmesg.txt", kdump=True)
    assert got == kexec_vmcore.dmesg.read_bytes()


def test_qemu_dump_dmesg(vmcore_qemu: GeneratedVmcore, tmp_path: Path) -> None:
    # the original QEMU layout (e_phoff 192), which makedumpfile itself cannot read
    assert extract(vmcore_qemu.vmcore, tmp_path / "dmesg.txt") == vmcore_qemu.dmesg.read_bytes()


def test_cli_dump_dmesg_like_makedumpfile(vmcore_6_12: GeneratedVmcore, tmp_path: Path) -> None:
    out = tmp_path / "dmesg.txt"
    mdf = tmp_path / "mdf.txt"
    ours = subprocess.run(
        [
            sys.executable,
            "-m",
            "kdumpd.cli.capture",
            "--dump-dmesg",
            str(vmcore_6_12.vmcore),
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert ours.returncode == 0, ours.stderr
    assert f"The dmesg log is saved to {out}." in ours.stdout + ours.stderr
    subprocess.run(
        ["makedumpfile", "--dump-dmesg", str(vmcore_6_12.vmcore), str(mdf)],
        capture_output=True,
        check=True,
    )
    assert out.read_bytes() == mdf.read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_vmcore_without_vmcoreinfo_is_a_one_line_error(tmp_path: Path) -> None:
    # an ELF core with no VMCOREINFO note: the program header table of a tiny core file
    core = tmp_path / "core"
    subprocess.run([sys.executable, "-c", _TINY_CORE, str(core)], check=True, capture_output=True)
    source = ElfVmcore(core)
    with pytest.raises(VmcoreinfoMissingError, match=f"^{core}: no VMCOREINFO"):
        dump_dmesg(source, tmp_path / "dmesg.txt")
    assert not (tmp_path / "dmesg.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["core"]


def test_cli_dump_dmesg_of_garbage_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a vmcore at all" * 100)
    out = tmp_path / "dmesg.txt"
    run = subprocess.run(
        [sys.executable, "-m", "kdumpd.cli.capture", "--dump-dmesg", str(junk), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert len(run.stderr.strip().splitlines()) == 1 and str(junk) in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk"]


# An ELF64 x86_64 core with one PT_LOAD of one zero page and no notes.
_TINY_CORE = """
import struct, sys
eh = struct.pack("<4sBBBBB7xHHIQQQIHHHHHH", b"\\x7fELF", 2, 1, 1, 0, 0, 4, 62, 1, 0, 64, 0,
                 0, 64, 56, 1, 0, 0, 0)
ph = struct.pack("<IIQQQQQQ", 1, 7, 4096, 0xffff888000000000, 0, 4096, 4096, 4096)
open(sys.argv[1], "wb").write((eh + ph).ljust(4096, b"\\0") + bytes(4096))
"""
