"""Free-space decisions for a target (local, NFS-mounted or SSH), and KDUMP_NUM_DUMPS retention.

kdump-tools checks nothing: a full vmcore copy fills the disk to the last byte and the system
that boots next cannot write its logs.  Here the dump is given a byte budget that always leaves a
reserve free; when the estimate does not fit, the dump is written up to the budget and marked
incomplete.  Older dumps are never deleted to make room: only KDUMP_NUM_DUMPS retention removes
them, and only after a successful dump.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from kdumpd.errors import KdumpdError

MIB = 1 << 20
RESERVE_MIN = 16 * MIB
RESERVE_MAX = 1024 * MIB
RESERVE_FRACTION = 50  # keep 2 % of the file system free
# kdump-compressed layout: main header and sub header blocks (the sub header holds the ELF notes
# and VMCOREINFO), two bitmaps of max_mapnr bits, one 24-byte descriptor per dumped page.
_HEADER_BLOCKS = 2
_NOTES_ALLOWANCE = 64 * 1024
_DESCRIPTOR_SIZE = 24
# what one dump directory of kdump-tools or kdumpd is named (retention touches nothing else)
_DUMP_DIR = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._:-]*-)?\d{12}")


class SpaceError(KdumpdError):
    """The target's free space cannot be read."""


@dataclass(frozen=True)
class SpacePlan:
    free: int  # bytes available to us now
    reserve: int  # bytes left free whatever happens
    estimate: int  # upper bound of the dump's size
    budget: int  # bytes the dump may use

    @property
    def fits(self) -> bool:
        return self.estimate <= self.budget


def free_space(path: Path) -> tuple[int, int]:
    """(bytes available to an unprivileged writer, file system size) of the file system at path."""
    try:
        st = os.statvfs(path)
    except OSError as exc:
        raise SpaceError(f"{path}: cannot read free space: {exc.strerror}") from exc
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


# POSIX `df -P -k`: "Filesystem 1024-blocks Used Available Capacity Mounted on", one line per
# file system; the names either side may hold spaces, the four numbers never do.
_DF_LINE = re.compile(r"(?P<fs>.*?)\s+(?P<size>\d+)\s+\d+\s+(?P<avail>\d+)\s+\d+%\s+(?P<mnt>/.*)")


def parse_df(text: str, where: str) -> tuple[int, int]:
    """(bytes available, file system size) from ``df -P -k``'s output for one path."""
    lines = [line for line in text.splitlines() if line.strip()]
    match = _DF_LINE.fullmatch(lines[-1].strip()) if len(lines) >= 2 else None
    if match is None:
        raise SpaceError(f"{where}: cannot read free space: unexpected df output {text!r:.200}")
    return int(match["avail"]) * 1024, int(match["size"]) * 1024


def reserve_for(fs_size: int) -> int:
    """Bytes to leave free on a file system of ``fs_size`` bytes."""
    return min(max(RESERVE_MIN, fs_size // RESERVE_FRACTION), RESERVE_MAX)


def estimate_dump_size(dumpable_pages: int, max_mapnr: int, page_size: int) -> int:
    """An upper bound of a kdump-compressed dump's size: every kept page stored uncompressed.

    Compression usually gives a fifth of this, but how much cannot be known before the pages
    are read; the bound decides whether a budget can ever cut the dump short.
    """
    bitmap = -(-max_mapnr // 8)
    bitmaps = 2 * (-(-bitmap // page_size) * page_size)
    return (
        _HEADER_BLOCKS * page_size
        + _NOTES_ALLOWANCE
        + bitmaps
        + dumpable_pages * (_DESCRIPTOR_SIZE + page_size)
    )


def plan_space(free: int, fs_size: int, estimate: int) -> SpacePlan:
    reserve = reserve_for(fs_size)
    return SpacePlan(free=free, reserve=reserve, estimate=estimate, budget=max(0, free - reserve))


def expired_dumps(coredir: Path, keep: int, current: str) -> list[Path]:
    """Dump directories to delete so that ``keep`` remain (KDUMP_NUM_DUMPS), oldest first.

    Like kdump-tools, only stamp directories count and the newest are kept; the capture just
    made (``current``) is never among those deleted.  ``keep`` 0 keeps everything.
    """
    if keep <= 0:
        return []
    try:
        names = [
            e.name
            for e in os.scandir(coredir)
            if e.is_dir(follow_symlinks=False) and _DUMP_DIR.fullmatch(e.name)
        ]
    except OSError as exc:
        raise SpaceError(f"{coredir}: cannot list: {exc.strerror}") from exc
    # order by the stamp (the last 12 digits), so remote host prefixes do not change the order
    names.sort(key=lambda n: (n[-12:], n))
    older = [n for n in names if n != current]
    drop = len(older) + 1 - keep
    return [coredir / n for n in older[: max(0, drop)]]


def apply_retention(coredir: Path, keep: int, current: str) -> list[str]:
    """Delete expired dumps; returns one message per directory that could not be removed."""
    errors = []
    for path in expired_dumps(coredir, keep, current):
        try:
            shutil.rmtree(path)
        except OSError as exc:
            errors.append(f"{path}: cannot delete old dump: {exc.strerror}")
    return errors
