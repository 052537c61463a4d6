"""Where a capture writes: the Target protocol and the local-directory target (also used for an
NFS export once it is mounted).

A target creates the stamp directory, takes the small files (dmesg, metadata) whole, hands out a
:class:`~kdumpd.dumpfile.sink.Sink` for the dump, and renames ``dump-incomplete`` to
``dump.<stamp>`` when told that every stage succeeded.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Protocol

from kdumpd.dumpfile.flat import FlatSink
from kdumpd.dumpfile.sink import Buffer, DumpWriteError, FileSink, Sink
from kdumpd.savecore import layout, space


class DumpOutput(Protocol):
    """A Sink the capture writes the dump into, closed (and checked) once at the end."""

    sink: Sink

    def close(self) -> None:
        """Release the output; raise when the bytes did not all arrive."""
        ...


class Target(Protocol):
    kind: str  # "local", "ssh" or "nfs"
    where: str  # for messages: the directory or user@host:directory
    dir_id: str
    stamp: str
    flattened: bool  # the dump goes out as a flattened stream (pipes) rather than a seekable file

    def prepare(self, when: float) -> None: ...

    def space(self) -> space.SpacePlan:
        """The free space and the dump's budget; raises SpaceError when it cannot be read."""
        ...

    def write_file(self, name: str, data: bytes) -> None: ...

    def open_dump(self, budget: int | None) -> DumpOutput: ...

    def commit(self) -> str: ...

    def retention(self, keep: int) -> list[str]: ...


class BudgetExhaustedError(DumpWriteError):
    """The dump reached the bytes it may use on this target."""

    def __init__(self, target: str, budget: int) -> None:
        super().__init__(target, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        self.args = (
            f"{target}: stopped at its space budget of {budget} bytes "
            "(the free space less the reserve that is always left free)",
        )


class BudgetSink:
    """A Sink that refuses any byte past ``budget``: the dump stops there, marked incomplete.

    The writer's abort path rewrites the header at offset 0, which stays within the budget, so
    the incomplete flag still lands in the file.  A flattened stream (SSH) lands on the remote
    disk as it is sent, record headers and rewrites included, so there the budget counts the
    stream's bytes; an unfinished stream (no end record, still ``dump-incomplete``) is itself
    marked incomplete.
    """

    def __init__(self, inner: Sink, budget: int) -> None:
        self.inner = inner
        self.budget = budget
        self.name = inner.name

    @property
    def seekable(self) -> bool:
        return self.inner.seekable

    def write_at(self, offset: int, *parts: Buffer) -> None:
        size = sum(memoryview(p).nbytes for p in parts)
        end = self.inner.size_after(size) if isinstance(self.inner, FlatSink) else offset + size
        if end > self.budget:
            raise BudgetExhaustedError(self.name, self.budget)
        self.inner.write_at(offset, *parts)

    def finish(self) -> None:
        self.inner.finish()


class LocalDump:
    def __init__(self, path: Path, budget: int | None) -> None:
        self.file = FileSink(layout.create_file(path), str(path))
        self.sink: Sink = self.file if budget is None else BudgetSink(self.file, budget)

    def close(self) -> None:
        self.file.close()


class LocalTarget:
    """A directory on a mounted file system: KDUMP_COREDIR, or an NFS export mounted on it."""

    flattened = False

    def __init__(self, coredir: Path, kind: str = "local", host: str | None = None) -> None:
        self.coredir = coredir
        self.kind = kind
        self.host = host
        self.where = str(coredir)
        self.dir_id = ""
        self.stamp = ""
        self.directory = coredir

    def prepare(self, when: float) -> None:
        self.directory, self.stamp = layout.create_dump_dir(self.coredir, when, self.host)
        self.dir_id = self.directory.name
        self.where = str(self.directory)

    def space(self) -> space.SpacePlan:
        free, size = space.free_space(self.directory)
        return space.plan_space(free, size, 0)

    def write_file(self, name: str, data: bytes) -> None:
        layout.write_file(self.directory / name, data)

    def open_dump(self, budget: int | None) -> DumpOutput:
        return LocalDump(self.directory / layout.INCOMPLETE_NAME, budget)

    def commit(self) -> str:
        return layout.commit_dump(self.directory, self.stamp).name

    def retention(self, keep: int) -> list[str]:
        if self.kind != "local":
            return []  # kdump-tools never prunes an NFS export shared by many hosts
        return space.apply_retention(self.coredir, keep, self.dir_id)


def file_size(target: Target, name: str) -> int | None:
    """Size of a file a local target wrote (None for remote targets)."""
    if isinstance(target, LocalTarget):
        try:
            return os.stat(target.directory / name).st_size
        except OSError:
            return None
    return None
