"""``kdumpd-capture``: makedumpfile's command line on kdumpd's capture engine.

    kdumpd-capture [-d LEVEL] [-z|-c|-l] [-E] [--threads N] VMCORE DUMPFILE
    kdumpd-capture -F [-d LEVEL] [-z|-c|-l] [-E] VMCORE > STREAM
    kdumpd-capture -R DUMPFILE < STREAM
    kdumpd-capture --dump-dmesg VMCORE FILE
    kdumpd-capture savecore …        (the capture-kernel orchestration)

Exit codes: 0 success, 1 failure, 2 bad usage.  Errors are one line on stderr, never a traceback;
an interrupted or failed dump is left marked incomplete.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import PurePosixPath
from types import FrameType
from typing import TextIO

from kdumpd.dumpfile.codecs import codec_by_name
from kdumpd.dumpfile.flat import FlatSink, reassemble
from kdumpd.dumpfile.inputs import open_source
from kdumpd.dumpfile.makedump_args import PROG, build_parser
from kdumpd.dumpfile.pipeline import (
    CaptureOptions,
    CaptureReport,
    Selection,
    capture_elf,
    capture_kdump,
)
from kdumpd.dumpfile.progress import Progress
from kdumpd.dumpfile.report import PageStats, format_report
from kdumpd.dumpfile.select import select_pages
from kdumpd.dumpfile.sink import FileSink, NullSink, Sink
from kdumpd.errors import KdumpdError, UsageError
from kdumpd.system import SystemRoot
from kdumpd.vmcore.source import DumpSource

MSG_PROGRESS, MSG_COMMON, MSG_REPORT = 1, 2, 16
_M_ARENA_MAX = -8  # glibc mallopt parameter
_SYSTEM_PREFIXES = ("/proc/", "/sys/", "/boot/", "/etc/", "/var/")


class Interrupted(KdumpdError):
    """SIGINT or SIGTERM arrived while capturing."""


def _check(args: argparse.Namespace) -> None:
    if not 0 <= args.dump_level <= 31:
        raise UsageError(f"-d {args.dump_level}: the dump level must be 0 to 31")
    if not 0 <= args.message_level <= 31:
        raise UsageError(f"--message-level {args.message_level}: must be 0 to 31")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be at least 1")
    if args.snappy:
        raise UsageError("-p: snappy compression is not supported; use -z (zstd), -c or -l")
    if args.rearrange and sys.stdin.isatty():
        raise UsageError("-R reads the flattened stream from standard input: redirect it")
    counts: tuple[int, ...]
    if args.rearrange:
        counts, what = (1,), "-R DUMPFILE"
    elif args.flat and not args.dump_dmesg:
        counts, what = (1,), "-F VMCORE (the stream goes to standard output)"
    elif args.dry_run:
        counts, what = (1, 2), "VMCORE [DUMPFILE]"
    else:
        counts, what = (2,), "VMCORE FILE" if args.dump_dmesg else "VMCORE DUMPFILE"
    if len(args.paths) not in counts:
        raise UsageError(f"expected {what}, got {len(args.paths)} path(s)")


def _system_path(root: SystemRoot, path: str) -> str:
    """VMCORE names like /proc/vmcore are read under --root; other paths are taken as given."""
    if path.startswith(_SYSTEM_PREFIXES):
        return str(root.path(PurePosixPath(path)))
    return path


def _open_output(path: str, force: bool) -> FileSink:
    if not force and os.path.lexists(path):
        raise UsageError(f"{path}: already exists (use -f to overwrite)")
    return FileSink.create(path)


class Console:
    """makedumpfile's message levels; with -F stdout carries the dump, so messages go to stderr."""

    def __init__(self, level: int, to_stderr: bool) -> None:
        self.level = level
        self.out: TextIO = sys.stderr if to_stderr else sys.stdout

    def common(self, text: str) -> None:
        if self.level & MSG_COMMON:
            print(text, file=self.out, flush=True)

    def warn(self, text: str) -> None:
        if self.level & MSG_COMMON:
            print(f"{PROG}: warning: {text}", file=sys.stderr, flush=True)

    def report(self, text: str) -> None:
        if self.level & MSG_REPORT:
            print(text, file=self.out, end="", flush=True)

    def progress(self, label: str) -> Progress:
        return Progress(sys.stderr if self.level & MSG_PROGRESS else None, label)


def _write_dump(
    source: DumpSource,
    selection: Selection,
    sink: Sink,
    options: CaptureOptions,
    console: Console,
) -> CaptureReport:
    if options.elf:
        return capture_elf(
            source,
            selection,
            sink,
            options,
            console.progress("Copying data"),
            console.progress("Excluding zero pages"),
        )
    return capture_kdump(source, selection, sink, options, console.progress("Copying data"))


def _remove_if_empty(sink: FileSink) -> bool:
    """A failure before the first byte leaves nothing worth keeping, not even a name."""
    try:
        if os.fstat(sink.fd).st_size == 0:
            os.unlink(sink.name)
            return True
    except OSError:
        pass
    return False


def run_capture(args: argparse.Namespace, root: SystemRoot, console: Console) -> None:
    vmcore = _system_path(root, args.paths[0])
    options = CaptureOptions(
        dump_level=args.dump_level,
        compression=args.compression or "zstd",
        elf=args.elf,
        threads=args.threads or len(os.sched_getaffinity(0)),
    )
    codec_by_name(options.compression)  # an unusable codec fails before any output exists
    source = open_source(vmcore)
    try:
        selection = select_pages(source, options.dump_level, console.progress)
        for warning in selection.warnings:
            console.warn(warning)
        target = "STDOUT" if args.flat else (args.paths[1] if len(args.paths) > 1 else "")
        sink: Sink
        if args.dry_run:
            sink = NullSink()
        elif args.flat:
            if sys.stdout.isatty():
                raise UsageError("-F writes a binary stream: redirect standard output")
            sink = FlatSink(sys.stdout.fileno())
        else:
            sink = _open_output(args.paths[1], args.force)
        try:
            report = _write_dump(source, selection, sink, options, console)
        except KdumpdError as exc:
            if isinstance(sink, NullSink) or (
                isinstance(sink, FileSink) and _remove_if_empty(sink)
            ):
                raise
            # Whatever stopped the copy (full disk, unreadable vmcore, signal), what was
            # written says it is incomplete: say so where the admin looks.
            note = "the stream is incomplete" if args.flat else f"{target} is marked incomplete"
            exc.args = (f"{exc}; {note}",)
            raise
        except BaseException:
            if isinstance(sink, FileSink):
                _remove_if_empty(sink)
            raise
        finally:
            if isinstance(sink, FileSink):
                sink.close()
        counts = dict(selection.counts, zero=report.zero_pages)
        stats = PageStats(
            original=selection.original,
            total=selection.max_mapnr,
            counts=counts,
            write_bytes=report.bytes_written,
            elf_pages=report.elf_pages,
        )
        console.report(format_report(stats))
        if not args.dry_run:
            console.common(f"\nThe dumpfile is saved to {target}.")
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()


def run_rearrange(args: argparse.Namespace, console: Console) -> None:
    out = args.paths[0]
    sink = _open_output(out, args.force)
    try:
        reassemble(sys.stdin.buffer, sink.fd, out)
        sink.finish()
    finally:
        sink.close()
    console.common(f"\nThe dumpfile is saved to {out}.")


def run_dmesg(args: argparse.Namespace, root: SystemRoot, console: Console) -> None:
    from kdumpd.vmcore.printk import dump_dmesg  # only this mode needs it

    vmcore = _system_path(root, args.paths[0])
    source = open_source(vmcore)
    try:
        dump_dmesg(source, args.paths[1])
    finally:
        close = getattr(source, "close", None)
        if callable(close):
            close()
    console.common(f"\nThe dmesg log is saved to {args.paths[1]}.")


def _savecore(argv: Sequence[str]) -> int:
    # Imported on demand: plain captures need none of savecore's configuration machinery.
    try:
        module = importlib.import_module("kdumpd.cli.savecore")
    except ModuleNotFoundError as exc:
        if exc.name != "kdumpd.cli.savecore":
            raise
        print(f"{PROG}: savecore: not available in this installation", file=sys.stderr)
        return 1
    result = module.main(list(argv))
    return int(result or 0)


def _one_malloc_arena() -> None:
    """Each compression thread would get its own glibc malloc arena, whose freed output buffers
    stay resident; with one arena RSS follows what is live (the capture kernel has tens of MB)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1)


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM (systemd stopping the unit) and SIGINT end the work through the normal error
    path, which leaves the output marked incomplete; the caller's handlers come back after."""
    saved = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["savecore"]:
        return _savecore(argv[1:])
    _one_malloc_arena()
    console = Console(7, to_stderr=True)
    try:
        args = build_parser().parse_args(argv)
        _check(args)
        console = Console(
            args.message_level | (MSG_REPORT if args.show_stats else 0),
            to_stderr=args.flat or args.rearrange,
        )
        root = SystemRoot.from_env(args.root)
        with _signals_interrupt():
            if args.rearrange:
                run_rearrange(args, console)
            elif args.dump_dmesg:
                run_dmesg(args, root, console)
            else:
                run_capture(args, root, console)
        console.common(f"\n{PROG} Completed.")
    except KdumpdError as exc:
        # One line, whatever the message level: an admin must always see why it failed.
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.exit_code
    except MemoryError:
        print(f"{PROG}: out of memory", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # The reader of our messages went away (``| head``); Python's exit-time flush of
        # stdout must not then print a traceback of its own.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"{PROG}: standard output was closed", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug must still not show a traceback to an admin at a console
        print(f"{PROG}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
