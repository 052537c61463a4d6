"""Where a dump's bytes go: a regular file written at offsets, or a flattened stream (flat.py).

Writers only ever call ``write_at(offset, data)``; the sink decides whether that is a ``pwrite``
or a framed record on a pipe.  Every OS failure becomes a :class:`DumpWriteError` naming the
output and the reason, so the CLI prints one line instead of a traceback.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Final, Protocol, TypeAlias

from kdumpd.errors import KdumpdError

Buffer: TypeAlias = bytes | bytearray | memoryview
_IOV_MAX: Final = 1024  # Linux's limit on buffers per writev


class DumpWriteError(KdumpdError):
    """Writing the dump failed (disk full, I/O error, closed pipe …)."""

    def __init__(self, target: str, exc: OSError, action: str = "write failed") -> None:
        reason = "no space left on device" if exc.errno == errno.ENOSPC else exc.strerror
        super().__init__(f"{target}: {action}: {reason or exc}")
        self.errno = exc.errno


class Sink(Protocol):
    name: str

    @property
    def seekable(self) -> bool:
        """True when a part already written may be rewritten later (the header at the end)."""
        ...

    def write_at(self, offset: int, *parts: Buffer) -> None:
        """Write ``parts`` back to back from ``offset`` (one gathered write, no joined copy)."""
        ...

    def finish(self) -> None:
        """Make everything written durable (fsync) or terminate the stream."""
        ...


def write_all(fd: int, parts: Sequence[Buffer], offset: int | None = None) -> None:
    """Write every byte of ``parts`` with gathered writes, resuming after short writes.

    Parts are byte buffers (memoryviews of format "B"), so ``len`` counts bytes.
    """
    pending = list(parts)
    while pending:
        group = pending[:_IOV_MAX]
        n = os.writev(fd, group) if offset is None else os.pwritev(fd, group, offset)
        if offset is not None:
            offset += n
        if n == sum(map(len, group)):  # the usual case: no per-part bookkeeping
            del pending[: len(group)]
            continue
        done = 0
        while done < len(group) and n >= len(group[done]):
            n -= len(group[done])
            done += 1
        pending = pending[done:]
        if n:
            pending[0] = memoryview(pending[0])[n:]
        elif done == 0:
            raise OSError(errno.EIO, "write made no progress")


class FileSink:
    """A regular file, written with ``pwrite`` at absolute offsets (holes stay sparse)."""

    seekable = True

    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name

    @classmethod
    def create(cls, path: str) -> FileSink:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DumpWriteError(path, exc, "cannot create") from exc
        return cls(fd, path)

    def write_at(self, offset: int, *parts: Buffer) -> None:
        try:
            write_all(self.fd, parts, offset)
        except OSError as exc:
            raise DumpWriteError(self.name, exc) from exc

    def finish(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # fsync on a character device (/dev/null)
                raise DumpWriteError(self.name, exc) from exc

    def close(self) -> None:
        os.close(self.fd)


class NullSink:
    """Discards everything: ``--dry-run`` goes through the whole pipeline without writing."""

    seekable = True
    name = "<dry run>"

    def write_at(self, offset: int, *parts: Buffer) -> None:
        pass

    def finish(self) -> None:
        pass
