"""kdumpd-capture on the genuine fixture vmcore, checked against makedumpfile, libkdumpfile,
drgn and crash (crash only when the kernel's -dbg vmlinux is in the test cache)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import zstandard
from capture_check import (
    DRGN,
    VMLINUX,
    assert_same_pages_drgn,
    assert_same_pages_libkdumpfile,
    bitmap_of_runs,
    crash_session,
    ensure_vmlinux,
    libkdumpfile_runs,
    run_capture,
)

from kdumpd.dumpfile.kdump_format import STATUS_INCOMPLETE, DiskDumpHeader, Layout
from kdumpd.dumpfile.kdump_reader import KdumpSource

pytestmark = pytest.mark.vmcore


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("capture")


@pytest.fixture(scope="module")
def zstd_d31(fixture_vmcore: Path, out: Path) -> tuple[Path, str]:
    """kdump-tools' level with the default compression, and the page report."""
    path = out / "d31.kdump"
    proc = run_capture("-d", "31", "--show-stats", fixture_vmcore, path)
    assert proc.returncode == 0, proc.stderr.decode()
    return path, proc.stdout.decode()


@pytest.fixture(scope="module")
def flat_d31(fixture_vmcore: Path, out: Path) -> Path:
    """The same dump as a flattened stream (``-F`` to standard output)."""
    stream = out / "d31.flat"
    with stream.open("wb") as f:
        proc = run_capture("-F", "-d", "31", fixture_vmcore, stdout=f.fileno())
    assert proc.returncode == 0, proc.stderr.decode()
    return stream


@pytest.fixture(scope="module")
def elf_d31(fixture_vmcore: Path, out: Path) -> Path:
    path = out / "d31.elf"
    proc = run_capture("-E", "-d", "31", "--message-level", "0", fixture_vmcore, path)
    assert proc.returncode == 0, proc.stderr.decode()
    return path


def _fixture_bitmap(shared_fixtures: Path, name: str) -> np.ndarray:
    raw = (
        zstandard.ZstdDecompressor()
        .decompressobj()
        .decompress((shared_fixtures / name).read_bytes())
    )
    return np.frombuffer(raw, dtype=np.uint8)


def _makedumpfile(*args: str | Path) -> None:
    proc = subprocess.run(["makedumpfile", *map(str, args)], capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()


def test_zstd_dump_reads_back_identical(
    zstd_d31: tuple[Path, str], fixture_vmcore: Path, shared_fixtures: Path
) -> None:
    path, stdout = zstd_d31
    with KdumpSource(str(path)) as dump:
        assert dump.header.status == 0x20  # zstd, complete
        assert dump.header.header_version == 6
        assert dump.header.utsname.release == "6.1.0-56-amd64"
        assert dump.header.utsname.version.startswith("#1 SMP PREEMPT_DYNAMIC Debian")
        assert dump.header.nr_cpus == 2
        ram, kept = dump.ram_bitmap(), dump.present_bitmap()
    assert np.array_equal(ram, _fixture_bitmap(shared_fixtures, "vmcore-6.1-kexec.bitmap1.zst"))
    assert np.array_equal(
        kept, _fixture_bitmap(shared_fixtures, "vmcore-6.1-kexec.d31.bitmap2.zst")
    )
    assert bitmap_of_runs(libkdumpfile_runs(path), len(kept) * 8).tobytes() == kept.tobytes()
    # Every kept page, the shared zero page's users included, reads back as in the vmcore.
    assert assert_same_pages_libkdumpfile(path, fixture_vmcore) == 23_784
    reference = json.loads((shared_fixtures / "vmcore-6.1-kexec.pages.json").read_text())
    want = reference["levels"]["31"]
    for label, key in [
        ("Pages filled with zero  ", "zero"),
        ("Non-private cache pages ", "cache"),
        ("Private cache pages     ", "cache_private"),
        ("User process data pages ", "user"),
        ("Free pages              ", "free"),
        ("Original pages  ", "original"),
        ("  Remaining pages  ", "remaining"),
        ("Memory Hole     ", "memory_hole"),
    ]:
        assert f"{label}: 0x{want[key]:016x}" in stdout, key
    assert "kdumpd-capture Completed." in stdout


@pytest.mark.parametrize(("letter", "level"), [("-l", "31"), ("-c", "1")])
def test_lzo_and_zlib_byte_identical_to_makedumpfile(
    letter: str, level: str, fixture_vmcore: Path, out: Path
) -> None:
    ours, theirs = out / f"ours{letter}.kdump", out / f"mdf{letter}.kdump"
    proc = run_capture(letter, "-d", level, "--message-level", "0", fixture_vmcore, ours)
    assert proc.returncode == 0, proc.stderr.decode()
    _makedumpfile(letter, "-d", level, fixture_vmcore, theirs)
    a, b = ours.read_bytes(), theirs.read_bytes()
    hdr_a, hdr_b = DiskDumpHeader.unpack(a), DiskDumpHeader.unpack(b)
    assert hdr_a == hdr_b
    lay = Layout(4096, hdr_a.max_mapnr, 0)
    assert a[lay.bitmap1_offset - 4096 :] == b[lay.bitmap1_offset - 4096 :]  # notes on
    assert a == b


def test_flattened_stream_rebuilds_to_the_same_file(
    zstd_d31: tuple[Path, str], flat_d31: Path, out: Path
) -> None:
    stream, rebuilt, by_mdf = flat_d31, out / "d31.rebuilt", out / "d31.mdf-rebuilt"
    assert stream.read_bytes()[:16] == b"makedumpfile\0\0\0\0"
    with stream.open("rb") as f:
        proc = run_capture("-R", rebuilt, stdin=f.fileno())
    assert proc.returncode == 0, proc.stderr.decode()
    assert rebuilt.read_bytes() == zstd_d31[0].read_bytes()
    with stream.open("rb") as f:
        subprocess.run(
            ["makedumpfile", "-R", str(by_mdf)], stdin=f, check=True, capture_output=True
        )
    assert by_mdf.read_bytes() == rebuilt.read_bytes()


def test_truncated_stream_leaves_rebuilt_file_marked_incomplete(flat_d31: Path, out: Path) -> None:
    cut = out / "cut.flat"
    data = flat_d31.read_bytes()
    cut.write_bytes(data[: len(data) - 20])  # drop the end marker and part of the last record
    rebuilt = out / "cut.kdump"
    with cut.open("rb") as f:
        proc = run_capture("-R", rebuilt, stdin=f.fileno())
    assert proc.returncode == 1
    assert len(proc.stderr.decode().strip().splitlines()) == 1
    assert "incomplete" in proc.stderr.decode()


def test_elf_output_reads_back_through_drgn(
    elf_d31: Path, fixture_vmcore: Path, out: Path, shared_fixtures: Path
) -> None:
    path = elf_d31
    head = path.read_bytes()[:64]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[48:52], "little") == 0
    kept = _fixture_bitmap(shared_fixtures, "vmcore-6.1-kexec.d31.bitmap2.zst")
    # Zero pages are left out of the file (p_memsz > p_filesz) and read back as zeros, which is
    # what they hold: every page makedumpfile keeps reads back as in the vmcore.
    assert assert_same_pages_drgn(path, fixture_vmcore, kept) == 23_784
    theirs = out / "mdf-d31.elf"
    _makedumpfile("-E", "-d", "31", fixture_vmcore, theirs)
    assert path.read_bytes() == theirs.read_bytes()


def test_refiltering_a_kdump_file_equals_filtering_the_vmcore(
    fixture_vmcore: Path, out: Path
) -> None:
    full, refiltered, direct = out / "mdf-d0.kdump", out / "refiltered.kdump", out / "direct.kdump"
    _makedumpfile("-l", "-d", "0", fixture_vmcore, full)
    proc = run_capture("-l", "-d", "31", "--message-level", "0", full, refiltered)
    assert proc.returncode == 0, proc.stderr.decode()
    _makedumpfile("-l", "-d", "31", fixture_vmcore, direct)
    assert refiltered.read_bytes() == direct.read_bytes()


def test_full_disk_marks_the_dump_incomplete(fixture_vmcore: Path, out: Path) -> None:
    mnt = out / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], check=True)
    try:
        path = mnt / "dump"
        proc = run_capture("-d", "1", "--message-level", "0", fixture_vmcore, path)
        assert proc.returncode == 1
        lines = proc.stderr.decode().strip().splitlines()
        assert len(lines) == 1 and "no space left on device" in lines[0], lines
        header = DiskDumpHeader.unpack(path.read_bytes()[:464])
        assert header.status & STATUS_INCOMPLETE
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_sigterm_marks_the_dump_incomplete(fixture_vmcore: Path, out: Path) -> None:
    path = out / "killed.kdump"
    from capture_check import CAPTURE, REPO

    proc = subprocess.Popen(
        [
            *CAPTURE,
            "-d",
            "0",
            "--no-compress",
            "--message-level",
            "0",
            str(fixture_vmcore),
            str(path),
        ],
        cwd=REPO,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.stat().st_blocks * 512 > 64 << 20:
            proc.send_signal(signal.SIGTERM)
            break
        time.sleep(0.005)
    _, err = proc.communicate(timeout=60)
    header = DiskDumpHeader.unpack(path.read_bytes()[:464])
    if proc.returncode == 0:
        pytest.fail("the capture finished before the signal could be sent")
    assert proc.returncode == 1
    assert f"interrupted by SIGTERM; {path} is marked incomplete" in err.decode()
    assert header.status & STATUS_INCOMPLETE


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (["-d", "32", "in", "out"], 2, "dump level must be 0 to 31"),
        (["in"], 2, "expected VMCORE DUMPFILE"),
        (["-c", "-l", "in", "out"], 2, "not allowed with"),
        (["/nonexistent/vmcore", "out"], 1, "/nonexistent/vmcore: cannot open"),
    ],
)
def test_bad_usage_is_one_line(args: list[str], code: int, text: str) -> None:
    proc = run_capture(*args)
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert text in err and "Traceback" not in err


def test_garbage_and_truncated_inputs_fail_cleanly(fixture_vmcore: Path, out: Path) -> None:
    garbage = out / "garbage"
    garbage.write_bytes(os.urandom(8192))
    truncated = out / "truncated"
    with fixture_vmcore.open("rb") as f:
        truncated.write_bytes(f.read(3 << 20))
    for bad in (garbage, truncated):
        proc = run_capture("-d", "1", bad, out / "never")
        err = proc.stderr.decode()
        assert proc.returncode == 1, err
        assert len(err.strip().splitlines()) == 1 and str(bad) in err and "Traceback" not in err


@pytest.fixture(scope="session")
def vmlinux() -> Path:
    """The fixture kernel's debug vmlinux (fetched once per machine); crash needs it."""
    why = ensure_vmlinux()
    if why:
        pytest.skip(f"{VMLINUX} is absent: {why}")
    return VMLINUX


def test_crash_opens_our_dump_and_stream(
    zstd_d31: tuple[Path, str], flat_d31: Path, shared_fixtures: Path, vmlinux: Path
) -> None:
    last_log_line = (
        (shared_fixtures / "vmcore-6.1-kexec.dmesg.txt").read_text().strip().splitlines()[-1]
    )
    for dump in (zstd_d31[0], flat_d31):
        text = crash_session(dump, "sys\nbt\nlog")
        assert "RELEASE: 6.1.0-56-amd64" in text, text[-2000:]
        assert 'PANIC: "Kernel panic - not syncing: sysrq triggered crash"' in text
        assert "sysrq_handle_crash" in text and "write_sysrq_trigger" in text
        assert last_log_line.split("] ", 1)[1] in text


@pytest.mark.parametrize("kind", ["kdump", "flat", "elf"])
def test_drgn_sees_tasks_printk_and_the_crashed_stack(
    kind: str,
    zstd_d31: tuple[Path, str],
    flat_d31: Path,
    elf_d31: Path,
    shared_fixtures: Path,
    vmlinux: Path,
) -> None:
    dump = {"kdump": zstd_d31[0], "flat": flat_d31, "elf": elf_d31}[kind]
    proc = subprocess.run(
        [
            str(DRGN),
            "-q",
            "-c",
            str(dump),
            "-s",
            str(vmlinux),
            str(shared_fixtures / "drgn-check.py"),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tasks = 56" in proc.stdout
    assert "memhog tasks = [(139, 'memhog')]" in proc.stdout
    assert "printk records = 433" in proc.stdout
    assert "'panic', 'sysrq_handle_crash'" in proc.stdout


def test_dump_dmesg_matches_makedumpfile(
    fixture_vmcore: Path, out: Path, shared_fixtures: Path
) -> None:
    path = out / "dmesg.txt"
    proc = run_capture("--dump-dmesg", fixture_vmcore, path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert path.read_bytes() == (shared_fixtures / "vmcore-6.1-kexec.dmesg.txt").read_bytes()
    assert f"The dmesg log is saved to {path}." in proc.stdout.decode()


def test_dry_run_reports_without_writing(fixture_vmcore: Path, out: Path) -> None:
    path = out / "never-written"
    proc = run_capture("--dry-run", "--show-stats", "-d", "16", fixture_vmcore, path)
    assert proc.returncode == 0, proc.stderr.decode()
    assert f"Free pages              : 0x{61507:016x}" in proc.stdout.decode()
    assert not path.exists()


def test_savecore_subcommand_is_dispatched() -> None:
    proc = run_capture("savecore", "--help")
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout.decode().startswith("usage: kdumpd-capture savecore")
