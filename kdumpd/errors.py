"""Typed exceptions shared by every subsystem.

Each carries a message an admin can act on; the CLI prints ``str(exc)`` on one line and never a
traceback.  Exit codes follow design.md: 1 failure, 2 bad usage or bad config.
"""

from __future__ import annotations


class KdumpdError(Exception):
    """Base of every error kdumpd reports to a user."""

    exit_code = 1


class ConfigError(KdumpdError):
    """A configuration file or value is invalid; the message names file, line and variable."""

    exit_code = 2


class UsageError(KdumpdError):
    """Bad command-line usage."""

    exit_code = 2


class SystemReadError(KdumpdError):
    """A system file (under /proc, /sys, /boot …) exists but cannot be read or parsed."""
