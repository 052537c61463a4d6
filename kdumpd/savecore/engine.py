"""savecore's view of the capture engine (kdumpd.vmcore + kdumpd.dumpfile), for one vmcore.

MAKEDUMP_ARGS is read with kdumpd-capture's own makedumpfile-compatible parser, so the config
means what it means on the command line.  Two kdump-tools habits are dropped on purpose: ``-F``
in MAKEDUMP_ARGS does not flatten a local dump (flattening exists for pipes; a flattened file
needs ``-R`` before crash or drgn can open it), and KDUMP_COMPRESSION's outer compressor is not
applied (the pages are already compressed; the analysis tools would need one more step).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from kdumpd.dumpfile.inputs import open_source
from kdumpd.dumpfile.makedump_args import build_parser
from kdumpd.dumpfile.pages import popcount
from kdumpd.dumpfile.pipeline import CaptureOptions, Selection, capture_elf, capture_kdump
from kdumpd.dumpfile.progress import Progress
from kdumpd.dumpfile.select import select_pages
from kdumpd.dumpfile.sink import Sink
from kdumpd.errors import ConfigError, KdumpdError, UsageError
from kdumpd.savecore.run import CrashFacts, DumpResult
from kdumpd.savecore.space import estimate_dump_size
from kdumpd.vmcore.printk import DmesgCorruptError, dump_dmesg
from kdumpd.vmcore.vmcoreinfo import Vmcoreinfo, parse_vmcoreinfo


def capture_options(makedump_args: Sequence[str], config_path: str) -> CaptureOptions:
    """CaptureOptions from MAKEDUMP_ARGS (makedumpfile's option letters)."""
    try:
        args = build_parser().parse_args([*makedump_args, "VMCORE", "DUMPFILE"])
    except UsageError as exc:
        raise ConfigError(f"{config_path}: MAKEDUMP_ARGS: {exc}") from exc
    if not 0 <= args.dump_level <= 31:
        raise ConfigError(f"{config_path}: MAKEDUMP_ARGS: -d {args.dump_level} is not 0-31")
    return CaptureOptions(
        dump_level=args.dump_level,
        compression=args.compression or "zstd",
        elf=args.elf,
        threads=args.threads or len(os.sched_getaffinity(0)),
    )


def _progress(label: str) -> Progress:
    return Progress(sys.stdout, label)


class VmcoreEngine:
    """The crashed kernel's /proc/vmcore (or a copy), opened once for every target."""

    def __init__(self, path: str, options: CaptureOptions) -> None:
        self.path = path
        self.options = options
        self.source = open_source(path)
        raw = self.source.vmcoreinfo_raw
        if raw is None:
            raise KdumpdError(f"{path}: no VMCOREINFO note: not a kernel crash dump")
        self.info: Vmcoreinfo = parse_vmcoreinfo(raw)
        self.facts = CrashFacts(
            kernel_release=self.info.osrelease or None,
            crash_time=self.info.crash_time,
            vmcore_size=os.stat(path).st_size,
            page_size=self.source.page_size,
            max_mapnr=self.source.max_mapnr,
        )
        self.dump_level = options.dump_level
        self.format_name = "elf" if options.elf else "kdump-compressed"
        self.compression = "none" if options.elf else options.compression
        self._selection: Selection | None = None

    def dmesg(self) -> tuple[bytes, str | None]:
        """The crashed kernel's log, and why it stops early when its records are corrupt."""
        with tempfile.TemporaryDirectory(prefix="kdumpd-dmesg.") as tmp:
            out = Path(tmp, "dmesg")
            try:
                dump_dmesg(self.source, out)
            except DmesgCorruptError as exc:  # the sound records before the damage are kept
                return out.read_bytes(), f"dmesg: {exc}"
            return out.read_bytes(), None

    def _select(self) -> Selection:
        if self._selection is None:
            self._selection = select_pages(self.source, self.options.dump_level, _progress)
            for warning in self._selection.warnings:  # a level lower than asked, and why
                print(f"kdumpd-capture: {warning}", flush=True)
        return self._selection

    def dumpable_pages(self) -> int:
        return popcount(self._select().bitmap2)

    def estimate(self) -> int:
        sel = self._select()
        return estimate_dump_size(popcount(sel.bitmap2), sel.max_mapnr, self.source.page_size)

    def write(self, sink: Sink, flattened: bool) -> DumpResult:
        # writers clear bits of bitmap 2 as they go (zero pages): each target gets a fresh copy
        sel = self._select()
        selection = dataclasses.replace(sel, bitmap2=sel.bitmap2.copy())
        if self.options.elf and not flattened:
            report = capture_elf(
                self.source,
                selection,
                sink,
                self.options,
                _progress("Copying data"),
                _progress("Excluding zero pages"),
            )
        else:
            report = capture_kdump(
                self.source, selection, sink, self.options, _progress("Copying data")
            )
        return DumpResult(report.pages_written, report.bytes_written)

    def close(self) -> None:
        close = getattr(self.source, "close", None)
        if callable(close):
            close()
