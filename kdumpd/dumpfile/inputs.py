"""Opening a dump input: an ELF vmcore or a kdump-compressed file (re-filtering).

A flattened stream is refused with the command that rebuilds it: it cannot be read in place.
"""

from __future__ import annotations

from kdumpd.dumpfile.flat import is_flattened
from kdumpd.dumpfile.kdump_reader import KdumpSource, is_kdump
from kdumpd.dumpfile.makedump_args import PROG
from kdumpd.errors import KdumpdError
from kdumpd.vmcore.elf import ElfVmcore
from kdumpd.vmcore.source import DumpSource


def open_source(path: str) -> DumpSource:
    """The input at ``path``, its kind told by its first bytes."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as exc:
        raise KdumpdError(f"{path}: cannot open: {exc.strerror}") from exc
    if is_kdump(head):
        return KdumpSource(path)
    if is_flattened(head):
        raise KdumpdError(f"{path}: a flattened dump; rebuild it first with {PROG} -R")
    return ElfVmcore(path)
