"""Typed errors of the vmcore reader, address translation and page classifier.

Every message is one line that names the input and what is wrong with it, so the CLI can print
``str(exc)`` as is.
"""

from __future__ import annotations

from kdumpd.errors import KdumpdError


class VmcoreError(KdumpdError):
    """The dump input cannot be used."""


class VmcoreFormatError(VmcoreError):
    """The input is not a dump we can read (garbage, wrong class, inconsistent headers)."""


class VmcoreTruncatedError(VmcoreError):
    """The input ends before data its headers promise."""


class VmcoreMachineError(VmcoreError):
    """The input is a dump of another architecture."""


class VmcoreinfoError(VmcoreError):
    """The VMCOREINFO note is present but a line in it is malformed."""


class VmcoreinfoMissingError(VmcoreError):
    """VMCOREINFO (or one key in it) is absent but needed for what was asked."""


class AddressError(VmcoreError):
    """A kernel virtual or physical address cannot be read from the dump."""
