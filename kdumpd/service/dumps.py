"""The index of saved dumps under ``KDUMP_COREDIR``: one entry per stamp directory.

kdumpd's capture side leaves a metadata file in each directory (design.md "Capture output"); dumps
saved by kdump-tools have none, and any directory may hold junk. So every field is first inferred
from the files themselves (names, magic bytes, the dmesg text) and the metadata only fills in what
it states with the right type. Nothing here raises on a malformed directory: it is listed with
what could be learnt, or skipped when it is not a dump directory at all.
"""

from __future__ import annotations

import calendar
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from kdumpd.errors import KdumpdError
from kdumpd.savecore.layout import (
    METADATA_FILE,
    STATUS_COMPLETE,
    STATUS_DMESG_ONLY,
    STATUS_INCOMPLETE,
)
from kdumpd.system import SystemRoot

# YYYYMMDDHHMM, optionally prefixed by the sender's ip or hostname (remote dumps).
_STAMP_DIR = re.compile(r"(?:(?P<host>[A-Za-z0-9][A-Za-z0-9._:-]{0,252})-)?(?P<stamp>\d{12})")
_COMPRESSORS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz", ".lz4": "lz4", ".zst": "zstd"}
_PANIC = re.compile(rb"Kernel panic - not syncing: ([^\r\n]{0,400})")
_RELEASE = re.compile(rb"Linux version (\S{1,64})")
_DMESG_SCAN_LIMIT = 8 << 20

# disk_dump_header: signature[8], header_version (int), then struct new_utsname (6 x 65 bytes);
# release is its third field.
_UTS_RELEASE_OFFSET = 8 + 4 + 2 * 65
_FLAT_HEADER_SIZE = 4096
_FLAT_DATA_HEADER = 16


class DumpNotFoundError(KdumpdError):
    """No saved dump with that id."""


class DumpDeleteError(KdumpdError):
    """A dump directory could not be removed."""


@dataclass(frozen=True)
class DumpInfo:
    id: str
    path: str  # system path of the directory
    timestamp_us: int
    kernel_release: str
    size: int
    status: str
    format: str
    panic_message: str

    def properties(self) -> dict[str, str | int]:
        """The ``org.kdumpd.Kdump1.Dump`` properties (also what Describe() lists)."""
        return {
            "Id": self.id,
            "Timestamp": self.timestamp_us,
            "Path": self.path,
            "KernelRelease": self.kernel_release,
            "Size": self.size,
            "Status": self.status,
            "Format": self.format,
            "PanicMessage": self.panic_message,
        }


def _stamp_us(stamp: str) -> int:
    try:
        seconds = calendar.timegm(time.strptime(stamp, "%Y%m%d%H%M"))
    except ValueError:
        return 0
    return seconds * 1_000_000


def _read_head(path: Path, size: int, offset: int = 0) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read(size)
    except OSError:
        return b""


def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def sniff_format(path: Path) -> tuple[str, str]:
    """(format, kernel release or "") of a dump file, from its first bytes."""
    compressor = _COMPRESSORS.get(path.suffix)
    if compressor:
        return f"{compressor}-compressed", ""
    head = _read_head(path, 16)
    if head.startswith(b"KDUMP   "):
        release = _read_head(path, 65, _UTS_RELEASE_OFFSET)
        return "kdump-compressed", _c_string(release)
    if head.startswith(b"makedumpfile"):
        data_header = _read_head(path, _FLAT_DATA_HEADER, _FLAT_HEADER_SIZE)
        # The first flattened chunk is normally the kdump header itself, at offset 0.
        if len(data_header) == 16 and int.from_bytes(data_header[:8], "big") == 0:
            base = _FLAT_HEADER_SIZE + _FLAT_DATA_HEADER
            release = _read_head(path, 65, base + _UTS_RELEASE_OFFSET)
            return "flattened", _c_string(release)
        return "flattened", ""
    if head.startswith(b"\x7fELF"):
        return "elf", ""
    return "unknown", ""


def _scan_dmesg(path: Path) -> tuple[str, str]:
    """(kernel release, panic message) from a saved kernel log."""
    text = _read_head(path, _DMESG_SCAN_LIMIT)
    release = _RELEASE.search(text)
    panic = _PANIC.search(text)
    return (
        release.group(1).decode("utf-8", "replace") if release else "",
        panic.group(1).decode("utf-8", "replace").strip() if panic else "",
    )


def _metadata(path: Path) -> Mapping[str, object]:
    try:
        data = json.loads(_read_head(path, 1 << 20) or b"null")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _text(meta: Mapping[str, object], *keys: str) -> str | None:
    for key in keys:
        value = meta.get(key)
        if isinstance(value, str) and value and len(value) < 4096:
            return value
    return None


def _number(meta: Mapping[str, object], *keys: str) -> int | None:
    for key in keys:
        value = meta.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return int(value)
    return None


def read_dump_dir(directory: Path, system_path: str) -> DumpInfo | None:
    """Describe one stamp directory; None when it is not one."""
    match = _STAMP_DIR.fullmatch(directory.name)
    if match is None:
        return None
    files: dict[str, Path] = {}
    size = 0
    try:
        for entry in os.scandir(directory):
            if entry.is_file(follow_symlinks=False):
                files[entry.name] = Path(entry.path)
                size += entry.stat(follow_symlinks=False).st_size
    except OSError:
        return None
    stamp = match.group("stamp")
    finished = (f"dump.{stamp}", f"vmcore.{stamp}")
    complete = [p for n, p in files.items() if n.startswith(finished)]
    partial = [p for n, p in files.items() if n.startswith(("dump-incomplete", "vmcore-incomp"))]
    dmesg = files.get(f"dmesg.{stamp}")
    if complete:
        status, dump_file = STATUS_COMPLETE, complete[0]
    elif partial:
        status, dump_file = STATUS_INCOMPLETE, partial[0]
    else:
        status, dump_file = (STATUS_DMESG_ONLY if dmesg else STATUS_INCOMPLETE), None
    fmt, release = sniff_format(dump_file) if dump_file else ("", "")
    panic = ""
    if dmesg is not None:
        dmesg_release, panic = _scan_dmesg(dmesg)
        release = release or dmesg_release
    info = DumpInfo(
        id=directory.name,
        path=system_path,
        timestamp_us=_stamp_us(stamp),
        kernel_release=release,
        size=size,
        status=status,
        format=fmt,
        panic_message=panic,
    )
    return _with_metadata(info, _metadata(files[METADATA_FILE]) if METADATA_FILE in files else {})


def _with_metadata(info: DumpInfo, meta: Mapping[str, object]) -> DumpInfo:
    """Fill gaps from the capture side's metadata; the files on disk decide the status."""
    if not meta:
        return info
    timestamp = _number(meta, "timestamp_us")
    seconds = _number(meta, "crash_time")
    if timestamp is None and seconds is not None:
        timestamp = seconds * 1_000_000
    status = info.status
    claimed = _text(meta, "status")
    if status == STATUS_COMPLETE and claimed in (STATUS_INCOMPLETE, STATUS_DMESG_ONLY):
        status = claimed  # the capture side knows when a "finished" file lacks pages
    return replace(
        info,
        timestamp_us=timestamp or info.timestamp_us,
        kernel_release=_text(meta, "kernel_release", "release") or info.kernel_release,
        format=_text(meta, "format") or info.format,
        panic_message=_text(meta, "panic_message", "panic") or info.panic_message,
        status=status,
    )


class DumpIndex:
    """Saved dumps of one core directory, re-read only where a directory changed."""

    def __init__(self, root: SystemRoot) -> None:
        self.root = root
        self._cache: dict[str, tuple[tuple[int, int], DumpInfo]] = {}

    def scan(self, coredir: str) -> dict[str, DumpInfo]:
        base = self.root.path(coredir)
        found: dict[str, DumpInfo] = {}
        try:
            entries = list(os.scandir(base))
        except OSError:
            return found
        for entry in entries:
            if not entry.is_dir(follow_symlinks=False) or not _STAMP_DIR.fullmatch(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            # A directory's mtime moves whenever a file is added, renamed or removed in it.
            key = (st.st_mtime_ns, st.st_ino)
            cached = self._cache.get(entry.path)
            if cached and cached[0] == key and cached[1].status == STATUS_COMPLETE:
                found[entry.name] = cached[1]
                continue
            info = read_dump_dir(Path(entry.path), f"{coredir.rstrip('/')}/{entry.name}")
            if info is not None:
                self._cache[entry.path] = (key, info)
                found[entry.name] = info
        return found

    def delete(self, coredir: str, dump_id: str) -> None:
        """Remove one dump directory; never follows a symlink out of the core directory."""
        if not _STAMP_DIR.fullmatch(dump_id):
            raise DumpNotFoundError(f"no saved dump {dump_id!r} in {coredir}")
        path = self.root.path(coredir) / dump_id
        try:
            st = path.lstat()
        except FileNotFoundError:
            raise DumpNotFoundError(f"no saved dump {dump_id!r} in {coredir}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise DumpNotFoundError(f"{coredir}/{dump_id} is not a dump directory")
        try:
            shutil.rmtree(path)
        except OSError as exc:
            raise DumpDeleteError(f"cannot delete {coredir}/{dump_id}: {exc.strerror}") from exc
        self._cache.pop(str(path), None)
