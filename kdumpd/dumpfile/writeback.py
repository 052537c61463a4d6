"""Keep a dump that is being written out of the page cache.

In a capture kernel the page cache is small, and it also holds the capture's own code:
libpython, numpy and libzstd are file pages.  Left to itself, the kernel lets the dump's dirty
pages pile up to the dirty limit, throttles the writer there, and evicts code pages that are
then read back from disk.  So every few MiB the file sink waits for the previous stretch's
writeback, starts the next one and drops the clean pages: ``sync_file_range(WAIT_BEFORE |
WRITE)`` then ``posix_fadvise(DONTNEED)``, the pattern of GNU dd's ``oflag=nocache``.  Only
data pages are written, no journal commit; the sink's final ``fsync`` still makes it durable.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import Final

DEFAULT_EVERY: Final = 4 << 20

# <linux/fs.h>
_WAIT_BEFORE: Final = 1
_WRITE: Final = 2

# sync_file_range exists only for regular files and block devices; /dev/null, pipes and a few
# file systems refuse it, and then there is no page cache to spare either.
_NOT_APPLICABLE: Final = frozenset({errno.ESPIPE, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP})


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except AttributeError:  # a libc without it (not glibc or musl)
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int
    return func


class WritebackPacer:
    """Counts bytes written to ``fd`` and, every ``every`` bytes, flushes and drops them.

    An I/O error reported here is raised as :class:`OSError`: ``sync_file_range`` consumes the
    file's error state, so a later ``fsync`` would no longer see it.
    """

    def __init__(self, fd: int, every: int = DEFAULT_EVERY) -> None:
        self.fd = fd
        self.every = every
        self.pending = 0
        self._func = _sync_file_range()

    def wrote(self, nbytes: int) -> None:
        if self._func is None:
            return
        self.pending += nbytes
        if self.pending >= self.every:
            self.pending = 0
            self._flush()

    def _flush(self) -> None:
        assert self._func is not None
        # Whole file (offset 0, length 0): the kdump writer fills the descriptor table and the
        # page data at two places, so there is no single range to name.
        if self._func(self.fd, 0, 0, _WAIT_BEFORE | _WRITE) != 0:
            err = ctypes.get_errno()
            if err in _NOT_APPLICABLE:
                self._func = None
                return
            raise OSError(err, os.strerror(err))
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)
