"""makedumpfile's command line, parsed: what ``kdumpd-capture`` and savecore's MAKEDUMP_ARGS mean.

One parser serves both, so an option in /etc/default/kdump-tools means exactly what it means when
typed by hand.  A usage error raises :class:`~kdumpd.errors.UsageError` instead of exiting.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from kdumpd.errors import UsageError

PROG = "kdumpd-capture"

_FORMS = """forms:
  kdumpd-capture [-d LEVEL] [-z|-c|-l] [-E] VMCORE DUMPFILE
  kdumpd-capture -F [-d LEVEL] [-z|-c|-l] [-E] VMCORE > STREAM
  kdumpd-capture -R DUMPFILE < STREAM
  kdumpd-capture --dump-dmesg VMCORE FILE
  kdumpd-capture savecore [--help]     (the capture kernel's job)
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=PROG,
        description="Filter and compress a kernel crash dump (makedumpfile-compatible options).",
        epilog=_FORMS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    comp = p.add_mutually_exclusive_group()
    comp.add_argument(
        "-z",
        dest="compression",
        action="store_const",
        const="zstd",
        help="compress pages with zstd (the default)",
    )
    comp.add_argument(
        "-c",
        dest="compression",
        action="store_const",
        const="zlib",
        help="compress pages with zlib",
    )
    comp.add_argument(
        "-l", dest="compression", action="store_const", const="lzo", help="compress pages with lzo"
    )
    comp.add_argument(
        "--no-compress",
        dest="compression",
        action="store_const",
        const="none",
        help="store pages uncompressed",
    )
    p.add_argument(
        "-d",
        dest="dump_level",
        type=int,
        default=31,
        metavar="LEVEL",
        help="dump level 0-31: 1 zero, 2 cache, 4 private cache, 8 user, 16 free pages",
    )
    p.add_argument("-E", dest="elf", action="store_true", help="write an ELF vmcore")
    p.add_argument(
        "-F", dest="flat", action="store_true", help="write the flattened format to standard output"
    )
    p.add_argument(
        "-R",
        dest="rearrange",
        action="store_true",
        help="rebuild DUMPFILE from a flattened stream on standard input",
    )
    p.add_argument("-f", dest="force", action="store_true", help="overwrite an existing DUMPFILE")
    p.add_argument(
        "--dump-dmesg",
        action="store_true",
        help="write the crashed kernel's log buffer of VMCORE to FILE",
    )
    p.add_argument(
        "--threads",
        "--num-threads",
        dest="threads",
        type=int,
        default=None,
        metavar="N",
        help="compression threads (default: the CPUs available)",
    )
    p.add_argument("--show-stats", action="store_true", help="print the page report")
    p.add_argument("--dry-run", action="store_true", help="do everything but write the dump")
    p.add_argument(
        "--message-level",
        type=int,
        default=7,
        metavar="N",
        help="bits: 1 progress, 2 messages, 4 errors, 8 debug, 16 report",
    )
    # makedumpfile tuning options that scripts and MAKEDUMP_ARGS carry: accepted and ignored,
    # since memory here is bounded by design and pages are read through bounded mmap windows.
    tuning = p.add_argument_group("accepted for makedumpfile compatibility, without effect")
    tuning.add_argument("--cyclic-buffer", metavar="KIB", help=argparse.SUPPRESS)
    tuning.add_argument("--non-cyclic", action="store_true", help=argparse.SUPPRESS)
    tuning.add_argument("--non-mmap", action="store_true", help=argparse.SUPPRESS)
    tuning.add_argument("--work-dir", metavar="DIR", help=argparse.SUPPRESS)
    tuning.add_argument("-D", dest="debug", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("-p", dest="snappy", action="store_true", help=argparse.SUPPRESS)
    p.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help="read /proc, /sys … under DIR (also $KDUMPD_ROOT)",
    )
    p.add_argument("paths", nargs="*", metavar="VMCORE DUMPFILE")
    return p
