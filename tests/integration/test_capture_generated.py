"""kdumpd-capture on vmcores the project generates (tests/vmcores.py): Debian 12 6.1 and
Debian 13 6.12 captured by a real crash kernel, and a QEMU dump-guest-memory ELF."""

from __future__ import annotations

import subprocess
import sys
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


ANON_LIMIT_KIB = 32 * 1024
# What must fit in the crashkernel reservation is the process's anonymous memory. Its clean,
# file-backed pages (numpy's libraries, the cached input file) are reclaimable, and in a capture
# kernel /proc/vmcore is not page cache at all; how many of them a run maps depends on the host's
# page cache: VmHWM was 40-42 MiB in one clone of the tree and 47-49 MiB in a fresh one, with
# the same anonymous memory. So the anonymous peak is sampled (every 2 ms, from /proc/self/statm:
# resident minus file-backed/shared) and VmHWM, not ru_maxrss (which keeps the forking pytest
# process's size across exec), is reported beside it.
_MEASURED = (
    "import sys, threading, time\n"
    "peak = [0]\n"
    "def sample():\n"
    "    while True:\n"
    "        resident, shared = map(int, open('/proc/self/statm').read().split()[1:3])\n"
    "        peak[0] = max(peak[0], (resident - shared) * 4)\n"
    "        time.sleep(0.002)\n"
    "threading.Thread(target=sample, daemon=True).start()\n"
    "from kdumpd.cli.capture import main\n"
    "rc = main(sys.argv[1:])\n"
    "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
    "print('memory', peak[0], hwm, file=sys.stderr)\n"
    "sys.exit(rc)\n"
)


def _peak_kib(*args: str | Path) -> tuple[int, int]:
    """(anonymous peak, VmHWM) of one capture, in KiB."""
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, *map(str, args)], capture_output=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr.decode()
    anon, hwm = proc.stderr.decode().split("memory")[-1].split()
    return int(anon), int(hwm)


def test_anonymous_memory_stays_flat_and_small_as_input_grows(
    fixture_vmcore: Path, vmcore_6_12: GeneratedVmcore, tmp_path: Path
) -> None:
    """The whole process (interpreter, numpy, buffers) on a 0.6 GB and a 1.5 GB vmcore."""
    small = _peak_kib("-d", "31", "--message-level", "0", fixture_vmcore, tmp_path / "a")
    large = _peak_kib("-d", "31", "--message-level", "0", vmcore_6_12.vmcore, tmp_path / "b")
    print(f"anonymous peak, VmHWM: {small} KiB (0.6 GB vmcore), {large} KiB (1.5 GB vmcore)")
    assert small[0] <= ANON_LIMIT_KIB and large[0] <= ANON_LIMIT_KIB, (small, large)
    assert large[0] - small[0] < 4 * 1024, (small, large)  # flat: bitmaps grow 2 bits per page


def test_root_option_reads_proc_vmcore_under_it(fixture_vmcore: Path, tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc" / "vmcore").symlink_to(fixture_vmcore)
    proc = run_capture(
        "--root", root, "-d", "31", "--message-level", "0", "/proc/vmcore", tmp_path / "dump"
    )
    assert proc.returncode == 0, proc.stderr.decode()
    with KdumpSource(str(tmp_path / "dump")) as dump:
        assert popcount(dump.present_bitmap()) == 23_784
