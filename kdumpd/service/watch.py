"""inotify through ctypes: tells the daemon that a watched directory changed.

The daemon watches directories, not files: editors and our own atomic writers replace files by
rename, which a watch on the old inode would never see.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from dataclasses import dataclass
from pathlib import Path

IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_IGNORED = 0x8000
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

DIRECTORY_CHANGES = (
    IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)

_HEADER = struct.Struct("iIII")


@dataclass(frozen=True)
class Event:
    wd: int
    mask: int
    name: str


def parse_events(buf: bytes) -> list[Event]:
    """Split a read() of an inotify fd into events (``struct inotify_event`` + padded name)."""
    events = []
    offset = 0
    while offset + _HEADER.size <= len(buf):
        wd, mask, _cookie, length = _HEADER.unpack_from(buf, offset)
        offset += _HEADER.size
        raw = buf[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(Event(wd, mask, raw.decode("utf-8", "surrogateescape")))
    return events


class Inotify:
    """One inotify instance; non-blocking, for ``loop.add_reader``."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd: int = fd
        self.watches: dict[int, Path] = {}

    def fileno(self) -> int:
        return self._fd

    def watch(self, path: Path, mask: int = DIRECTORY_CHANGES) -> int | None:
        """Add (or refresh) a watch; None when the path does not exist or cannot be watched."""
        wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), ctypes.c_uint32(mask))
        if wd < 0:
            err = ctypes.get_errno()
            if err in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return None
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self.watches[wd] = path
        return int(wd)

    def read(self) -> list[Event]:
        try:
            buf = os.read(self._fd, 64 * 1024)
        except BlockingIOError:
            return []
        events = parse_events(buf)
        for event in events:
            if event.mask & IN_IGNORED:
                self.watches.pop(event.wd, None)
        return events

    def close(self) -> None:
        os.close(self._fd)
