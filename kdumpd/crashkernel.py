"""The ``crashkernel=`` kernel parameter: grammar, and what the kernel reserves for it.

Forms (Documentation/admin-guide/kdump/kdump.rst)::

    crashkernel=size[@offset]
    crashkernel=start-[end]:size[,start-[end]:size...][@offset]
    crashkernel=size,high   crashkernel=size,low   (x86_64, arm64, riscv …)

Sizes are the kernel's ``memparse``: a C integer (decimal, ``0x`` hex or ``0`` octal) with an
optional K, M, G, T, P or E suffix (either case). Like the kernel, :func:`reservation` uses the
*last* plain ``crashkernel=`` entry, and only falls back to ``,high`` (with ``,low``, default
256M) when there is no plain one. Range lists compare against the system RAM as the kernel sees
it (memblock: the sum of the "System RAM" entries of /proc/iomem) rounded up to 128M — the
kernel's own allowance for firmware-reserved memory; ``start`` is inclusive, ``end`` exclusive.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kdumpd.errors import KdumpdError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
_SUFFIXES = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_SUFFIX_KIND: dict[str, Literal["high", "low", "cma"]] = {
    ",high": "high",
    ",low": "low",
    ",cma": "cma",
}
_KNOWN_SUFFIXES = tuple(_SUFFIX_KIND)
DEFAULT_LOW_SIZE = 256 * MiB  # x86 DEFAULT_CRASH_KERNEL_LOW_SIZE with the default swiotlb
_ROUND = 128 * MiB
_U64 = (1 << 64) - 1


class CrashkernelSyntaxError(KdumpdError):
    """A ``crashkernel=`` value the kernel would reject (it then reserves nothing)."""

    exit_code = 2


@dataclass(frozen=True)
class Range:
    start: int
    end: int | None  # exclusive; None: no upper bound
    size: int


@dataclass(frozen=True)
class CrashkernelSpec:
    """One parsed ``crashkernel=`` value."""

    text: str
    kind: Literal["simple", "ranges", "high", "low", "cma"]
    size: int = 0  # simple/high/low/cma
    ranges: tuple[Range, ...] = ()
    offset: int | None = None

    def size_for(self, system_ram: int) -> int:
        """Bytes reserved on a machine whose memblock RAM is ``system_ram``.

        Raises CrashkernelSyntaxError for what the kernel rejects at this size ("invalid size").
        """
        if self.kind != "ranges":
            return self.size
        total = rounded_ram(system_ram)
        for r in self.ranges:
            if r.size >= total:
                raise CrashkernelSyntaxError(
                    f"invalid size: {format_size(r.size)} is not below"
                    f" the {format_size(total)} of RAM"
                )
            if r.start <= total and (r.end is None or total < r.end):
                return r.size
        return 0


def rounded_ram(system_ram: int) -> int:
    """RAM as crashkernel= ranges see it: rounded up to 128M, so that a "4G" machine whose
    firmware keeps a few MiB still counts as 4G."""
    return -(-system_ram // _ROUND) * _ROUND


def memparse(text: str, pos: int = 0) -> tuple[int, int]:
    """The kernel's memparse at ``pos``: (value, position after it); position unchanged if none."""
    m = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*").match(text, pos)
    if not m:
        return 0, pos
    digits = m.group(0)
    base = 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") else 10
    value = int(digits, base)
    end = m.end()
    if end < len(text) and text[end].lower() in _SUFFIXES:
        value <<= _SUFFIXES[text[end].lower()]
        end += 1
    return value & _U64, end


def _size(text: str, pos: int, what: str) -> tuple[int, int]:
    value, end = memparse(text, pos)
    if end == pos:
        got = text[pos : pos + 10] or "end of value"
        raise CrashkernelSyntaxError(f"crashkernel={text}: {what} expected at {got!r}")
    return value, end


def parse_crashkernel(text: str) -> CrashkernelSpec:
    """Parse the value of one ``crashkernel=`` parameter; CrashkernelSyntaxError if malformed."""
    for suffix in _KNOWN_SUFFIXES:
        if text.endswith(suffix):
            size, end = _size(text, 0, "memory value")
            if end != len(text) - len(suffix):
                raise CrashkernelSyntaxError(f"crashkernel={text}: expected size{suffix}")
            return CrashkernelSpec(text, _SUFFIX_KIND[suffix], size=size)
    if ":" in text:
        return _parse_ranges(text)
    size, end = _size(text, 0, "memory value")
    offset = None
    if end < len(text):
        if text[end] != "@":
            raise CrashkernelSyntaxError(f"crashkernel={text}: unrecognized {text[end]!r}")
        offset, end = _size(text, end + 1, "offset")
        if end != len(text):
            raise CrashkernelSyntaxError(f"crashkernel={text}: unrecognized {text[end]!r}")
    if size == 0:
        raise CrashkernelSyntaxError(f"crashkernel={text}: size is zero")
    return CrashkernelSpec(text, "simple", size=size, offset=offset)


def _parse_ranges(text: str) -> CrashkernelSpec:
    ranges: list[Range] = []
    pos = 0
    while True:
        start, pos = _size(text, pos, "memory value")
        if text[pos : pos + 1] != "-":
            raise CrashkernelSyntaxError(f"crashkernel={text}: '-' expected after {start}")
        pos += 1
        end: int | None = None
        if text[pos : pos + 1] != ":":
            end, pos = _size(text, pos, "memory value")
            if end <= start:
                raise CrashkernelSyntaxError(f"crashkernel={text}: range end <= start")
        if text[pos : pos + 1] != ":":
            raise CrashkernelSyntaxError(f"crashkernel={text}: ':' expected")
        size, pos = _size(text, pos + 1, "memory value")
        ranges.append(Range(start, end, size))
        if text[pos : pos + 1] != ",":
            break
        pos += 1
    offset = None
    if text[pos : pos + 1] == "@":
        offset, pos = _size(text, pos + 1, "offset")
    if pos != len(text):
        raise CrashkernelSyntaxError(f"crashkernel={text}: unrecognized {text[pos:]!r}")
    return CrashkernelSpec(text, "ranges", ranges=tuple(ranges), offset=offset)


def crashkernel_values(cmdline_tokens: list[str]) -> list[str]:
    """The values of every ``crashkernel=`` parameter, in command-line order."""
    return [t.split("=", 1)[1].strip('"') for t in cmdline_tokens if t.startswith("crashkernel=")]


@dataclass(frozen=True)
class Reservation:
    """What the kernel reserves for a command line on a given machine (sizes in bytes)."""

    param: str  # the crashkernel= parameter(s) that decided it, "" when there is none
    size: int  # main region; 0 when nothing is reserved
    low_size: int = 0  # extra region below 4G for ,high
    offset: int | None = None
    high: bool = False
    error: str | None = None  # why the kernel rejects the parameter, if it does

    @property
    def total(self) -> int:
        return self.size + self.low_size


def reservation(cmdline_tokens: list[str], system_ram: int) -> Reservation:
    """The kernel's choice among the ``crashkernel=`` entries, and its size for ``system_ram``."""
    values = crashkernel_values(cmdline_tokens)
    plain = [v for v in values if not v.endswith(_KNOWN_SUFFIXES)]
    high = [v for v in values if v.endswith(",high")]
    low = [v for v in values if v.endswith(",low")]
    if plain:
        chosen = [plain[-1]]
    elif high:
        chosen = [high[-1], *low[-1:]]
    else:
        chosen = values  # none, or only ,low/,cma: the kernel ignores them
    param = " ".join(f"crashkernel={v}" for v in chosen)
    try:
        if plain:
            spec = parse_crashkernel(plain[-1])
            return Reservation(param, spec.size_for(system_ram), offset=spec.offset)
        if not high:
            return Reservation(param, 0)
        low_size = parse_crashkernel(low[-1]).size if low else DEFAULT_LOW_SIZE
        return Reservation(param, parse_crashkernel(high[-1]).size, low_size, high=True)
    except CrashkernelSyntaxError as exc:
        return Reservation(param, 0, error=str(exc))


def format_size(n: int) -> str:
    """``320M``, ``4G``, ``1536K``: the largest unit that divides exactly (crashkernel style)."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if n and n % (1 << shift) == 0:
            return f"{n >> shift}{unit}"
    return str(n)


def dmesg_line(start: int, size: int, low: bool = False) -> str:
    """The line the kernel logs for a reservation (Linux 6.7 and later); ``low``: the extra
    region below 4G that ``,high`` reservations get."""
    end = start + size
    if low:
        return f"crashkernel low memory reserved: 0x{start:08x} - 0x{end:08x} ({size // MiB} MB)"
    return f"crashkernel reserved: 0x{start:016x} - 0x{end:016x} ({size // MiB} MB)"
