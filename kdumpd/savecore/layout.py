"""Where a capture's files go and how they become durable: stamp directories, names, metadata.

Layout (same names as kdump-tools, safer modes)::

    $KDUMP_COREDIR/<id>/            0700; <id> is YYYYMMDDHHMM, remote: <ip|hostname>-YYYYMMDDHHMM
        dmesg.<stamp>               0600, written first
        dump-incomplete             0600, while the dump is written, and kept under this name when
                                    the dump was cut short or any stage failed
        dump.<stamp>                the same file, renamed only after every stage succeeded and
                                    the file and the directory were fsynced
        metadata.json               0600, the capture's own account (schema below)

Stamps are collision-safe: when ``<stamp>`` already exists (two crashes in one minute) the next
free minute is taken, so names keep the 12-digit form that apport and kdumpd's dump index match;
the true crash time is in the metadata.

Metadata schema (``metadata.json``, version 1; the daemon's dump index reads it, unknown keys are
ignored, every key may be null when unknown)::

    schema           1
    id               directory name
    status           "complete" | "incomplete" | "dmesg-only"
    in_progress      true while the capture runs (a record left so means the capture died)
    kernel_release   crashed kernel's release (VMCOREINFO OSRELEASE)
    crash_time       crash time, seconds since the epoch (VMCOREINFO CRASHTIME)
    timestamp_us     crash time (or capture start when unknown), microseconds
    panic_message    text after "Kernel panic - not syncing: " in the crashed kernel's log
    dump_level       makedumpfile dump level 0..31
    format           "kdump-compressed" | "flattened" | "elf"
    compression      "zstd" | "zlib" | "lzo" | "none"
    target           "local" | "ssh" | "nfs"
    files            {"dmesg": name, "dump": name}
    sizes            {"vmcore", "dmesg", "dump", "estimate", "free_before", "budget"} in bytes
    pages            {"dumpable", "written"}
    durations        {"boot_to_start", "dmesg", "dump", "sync", "total"} in seconds
    peak_rss_bytes   the capture process's VmHWM
    errors           list of one-line messages, one per failed stage
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdumpd.errors import KdumpdError

STAMP_FORMAT = "%Y%m%d%H%M"
METADATA_FILE = "metadata.json"
INCOMPLETE_NAME = "dump-incomplete"
METADATA_SCHEMA = 1
STATUS_COMPLETE = "complete"
STATUS_INCOMPLETE = "incomplete"
STATUS_DMESG_ONLY = "dmesg-only"
DIR_MODE = 0o700
FILE_MODE = 0o600
_MAX_STAMP_TRIES = 24 * 60  # one day of minutes: past that, something else is wrong


class LayoutError(KdumpdError):
    """The dump directory or one of its files could not be created or committed."""


def stamp_of(when: float) -> str:
    """kdump-tools' ``date +%Y%m%d%H%M`` (local time, as the capture kernel's clock gives it)."""
    return time.strftime(STAMP_FORMAT, time.localtime(when))


def dump_file_name(stamp: str) -> str:
    return f"dump.{stamp}"


def dmesg_file_name(stamp: str) -> str:
    return f"dmesg.{stamp}"


def dir_name(stamp: str, host: str | None) -> str:
    """``<stamp>`` locally, ``<host>-<stamp>`` for remote targets (HOSTTAG)."""
    return f"{host}-{stamp}" if host else stamp


def candidate_stamps(when: float) -> list[str]:
    """The stamp for ``when``, then the following minutes, in the order they are tried."""
    start = int(when) - int(when) % 60
    return [stamp_of(start + 60 * i) for i in range(_MAX_STAMP_TRIES)]


def create_dump_dir(parent: Path, when: float, host: str | None) -> tuple[Path, str]:
    """Create a new 0700 directory for this capture under ``parent``; returns (path, stamp).

    ``mkdir`` either creates the directory or fails because it exists, so two captures (or a
    leftover directory) can never share one.
    """
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LayoutError(f"{parent}: cannot create: {exc.strerror}") from exc
    for stamp in candidate_stamps(when):
        path = parent / dir_name(stamp, host)
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        except OSError as exc:
            raise LayoutError(f"{path}: cannot create: {exc.strerror}") from exc
        os.chmod(path, DIR_MODE)  # mkdir's mode is filtered by the umask
        fsync_dir(parent)
        return path, stamp
    raise LayoutError(f"{parent}: no free dump directory name for {stamp_of(when)}")


def create_file(path: Path) -> int:
    """A new, empty 0600 file opened for writing (never an existing one)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, FILE_MODE)
    except OSError as exc:
        raise LayoutError(f"{path}: cannot create: {exc.strerror}") from exc
    os.fchmod(fd, FILE_MODE)
    return fd


def _fsync(path: Path, flags: int = 0) -> None:
    """Make a file's data durable, opening it by name (``flags``: e.g. os.O_DIRECTORY)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (a new file, a rename) durable."""
    _fsync(path, os.O_DIRECTORY)


def write_file(path: Path, data: bytes) -> None:
    """Write a whole small file durably and atomically: temp name, fsync, rename, fsync dir."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = create_file(tmp)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def commit_dump(directory: Path, stamp: str) -> Path:
    """Rename ``dump-incomplete`` to ``dump.<stamp>`` after syncing it; returns the new path.

    Called only when every stage succeeded: the name ``dump.<stamp>`` is the promise that the
    file is whole and on disk.
    """
    src = directory / INCOMPLETE_NAME
    dest = directory / dump_file_name(stamp)
    try:
        _fsync(src)
        os.rename(src, dest)
        fsync_dir(directory)
    except OSError as exc:
        raise LayoutError(f"{src}: cannot commit the dump: {exc.strerror}") from exc
    return dest


@dataclass
class Metadata:
    """The capture's account of itself, written as ``metadata.json`` (schema in the module doc)."""

    id: str
    target: str
    status: str = STATUS_INCOMPLETE
    in_progress: bool = True
    kernel_release: str | None = None
    crash_time: int | None = None
    timestamp_us: int | None = None
    panic_message: str | None = None
    dump_level: int | None = None
    format: str | None = None
    compression: str | None = None
    files: dict[str, str | None] = field(default_factory=lambda: {"dmesg": None, "dump": None})
    sizes: dict[str, int | None] = field(default_factory=dict)
    pages: dict[str, int | None] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: int | None = None
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"schema": METADATA_SCHEMA, **self.__dict__}
        doc["durations"] = {k: round(v, 3) for k, v in self.durations.items()}
        return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def final_status(dump_committed: bool, dump_started: bool, dmesg_saved: bool) -> str:
    """What the directory holds, told honestly."""
    if dump_committed:
        return STATUS_COMPLETE
    if not dump_started and dmesg_saved:
        return STATUS_DMESG_ONLY
    return STATUS_INCOMPLETE
