"""Oracles for capture tests: read our dumps back through libkdumpfile, drgn and crash.

Nothing here uses kdumpd's own reader, so a bug shared by our writer and our reader cannot hide.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
CAPTURE = [sys.executable, "-m", "kdumpd.cli.capture"]
PAGE = 4096
CHUNK_PAGES = 256
DBG_PACKAGE = "linux-image-6.1.0-56-amd64-dbg"
DBG_DIR = Path(os.environ.get("KDUMPD_TEST_CACHE", "/var/tmp/kdumpd-test-cache"), "dbg")
VMLINUX_MEMBER = "./usr/lib/debug/boot/vmlinux-6.1.0-56-amd64"
VMLINUX = DBG_DIR / VMLINUX_MEMBER
# The drgn CLI oracle is the dev venv's (pyproject's dev extras: drgn >= 0.0.27), also when the
# tests run in .venv-debian: Debian 12's drgn 0.0.22 lacks helpers drgn-check.py uses.
DRGN = REPO / ".venv" / "bin" / "drgn"


def ensure_vmlinux() -> str | None:
    """Fetch the fixture kernel's debug vmlinux into the test cache once per machine.

    ``apt-get download`` of the -dbg package (858 MB) and only the vmlinux extracted from it,
    under a lock, written under a temporary name and renamed when whole. Returns why it is not
    available, or None when it is.
    """
    import fcntl

    if VMLINUX.exists():
        return None
    DBG_DIR.mkdir(parents=True, exist_ok=True)
    with (DBG_DIR / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if VMLINUX.exists():
            return None
        got = subprocess.run(
            ["apt-get", "download", DBG_PACKAGE], cwd=DBG_DIR, capture_output=True, timeout=900
        )
        debs = sorted(DBG_DIR.glob(f"{DBG_PACKAGE}_*.deb"))
        if got.returncode != 0 or not debs:
            return f"apt-get download {DBG_PACKAGE} failed: {got.stderr.decode().strip()[-200:]}"
        tmp = VMLINUX.with_name(VMLINUX.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as out:
            deb = subprocess.Popen(
                ["dpkg-deb", "--fsys-tarfile", str(debs[-1])], stdout=subprocess.PIPE
            )
            tar = subprocess.run(
                ["tar", "-xO", VMLINUX_MEMBER], stdin=deb.stdout, stdout=out, timeout=1800
            )
            assert deb.stdout is not None
            deb.stdout.close()
            deb.wait(timeout=60)
        for path in debs:
            path.unlink()
        if tar.returncode != 0 or deb.returncode != 0:
            tmp.unlink()
            return f"extracting {VMLINUX_MEMBER} from {debs[-1].name} failed"
        tmp.rename(VMLINUX)
    return None


def run_capture(
    *args: str | os.PathLike[str], stdin: int | None = None, stdout: int | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CAPTURE, *map(str, args)],
        stdin=stdin,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
        timeout=300,
    )


def libkdumpfile_runs(dump: Path) -> Iterator[tuple[int, int]]:
    """Runs (start_pfn, count) of pages libkdumpfile says the dump holds."""
    import kdumpfile

    k = kdumpfile.kdumpfile(str(dump))
    bmp = k.attr["file.pagemap"]
    max_pfn = k.attr["max_pfn"]
    pfn = 0
    while pfn < max_pfn:
        try:
            start = bmp.find_set(pfn)
        except Exception:  # no further set bit
            return
        if start >= max_pfn:
            return
        try:
            end = min(bmp.find_clear(start), max_pfn)
        except Exception:
            end = max_pfn
        yield start, end - start
        pfn = end


def bitmap_of_runs(runs: Iterator[tuple[int, int]], max_mapnr: int) -> np.ndarray:
    bits = np.zeros(max_mapnr, dtype=bool)
    for start, count in runs:
        bits[start : start + count] = True
    return np.packbits(bits, bitorder="little")


def assert_same_pages_libkdumpfile(dump: Path, vmcore: Path) -> int:
    """Every page libkdumpfile reads from ``dump`` equals the vmcore's page; returns the count."""
    import kdumpfile

    from kdumpd.vmcore.elf import ElfVmcore

    k = kdumpfile.kdumpfile(str(dump))
    checked = 0
    with ElfVmcore(vmcore) as src:
        for start, count in list(libkdumpfile_runs(dump)):
            for lo in range(start, start + count, CHUNK_PAGES):
                n = min(CHUNK_PAGES, start + count - lo)
                got = k.read(kdumpfile.KDUMP_MACHPHYSADDR, lo * PAGE, n * PAGE)
                want = bytes(src.read_pages(lo, n))
                if got != want:
                    bad = next(i for i in range(n) if _page(got, i) != _page(want, i))
                    raise AssertionError(f"{dump}: pfn {lo + bad:#x} differs from the vmcore")
                checked += n
    return checked


def _page(data: bytes, i: int) -> bytes:
    return data[i * PAGE : (i + 1) * PAGE]


def assert_same_pages_drgn(dump: Path, vmcore: Path, bitmap: np.ndarray) -> int:
    """Pages of ``bitmap`` read through drgn (physical reads) equal the vmcore's."""
    import drgn

    from kdumpd.dumpfile.pages import iter_runs
    from kdumpd.vmcore.elf import ElfVmcore

    prog = drgn.Program()
    prog.set_core_dump(str(dump))
    checked = 0
    with ElfVmcore(vmcore) as src:
        for start, count in iter_runs(bitmap):
            for lo in range(start, start + count, CHUNK_PAGES):
                n = min(CHUNK_PAGES, start + count - lo)
                got = prog.read(lo * PAGE, n * PAGE, True)
                if got != bytes(src.read_pages(lo, n)):
                    raise AssertionError(f"{dump}: drgn reads pfns {lo:#x}+{n} differently")
                checked += n
    return checked


def crash_session(dump: Path, commands: str) -> str:
    """Output of Debian's crash running ``commands`` on ``dump`` with the -dbg vmlinux."""
    proc = subprocess.run(
        ["crash", "-s", str(VMLINUX), str(dump)],
        input=commands + "\nquit\n",
        capture_output=True,
        text=True,
        timeout=240,
    )
    return proc.stdout + proc.stderr
