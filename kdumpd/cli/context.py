"""What every ``kdump-config`` subcommand receives, and the exit codes they return."""

from __future__ import annotations

import sys
from dataclasses import dataclass

from kdumpd.errors import UsageError
from kdumpd.system import SystemRoot

__all__ = ["EXIT_FAILURE", "EXIT_NOT_READY", "EXIT_OK", "EXIT_USAGE", "Context", "UsageError"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2  # bad usage or bad config
EXIT_NOT_READY = 3


@dataclass(frozen=True)
class Context:
    """Global options, parsed once by the dispatcher."""

    root: SystemRoot  # --root DIR, else $KDUMPD_ROOT, else /
    json: bool = False  # --json
    prog: str = "kdump-config"


def emit(*lines: str) -> None:
    """Print lines to stdout (one place, so output stays line-buffered and testable)."""
    for line in lines:
        print(line)
    sys.stdout.flush()
