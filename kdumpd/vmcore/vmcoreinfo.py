"""VMCOREINFO: the ``KEY=VALUE`` text the crashed kernel leaves for dump tools.

Parsing is lenient about what it does not know (unknown keys are kept as text, lines without
``=`` are ignored, as drgn and makedumpfile do) and strict about the value of every key it
interprets: a malformed number is an error naming the line, never a silent zero, because a wrong
offset would make the page classifier drop pages the admin needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from kdumpd.vmcore.errors import VmcoreinfoError, VmcoreinfoMissingError

_TYPED_KEY = re.compile(r"(SYMBOL|SIZE|OFFSET|LENGTH|NUMBER)\(([^()]+)\)\Z")
_HEX = re.compile(r"(?:0[xX])?[0-9a-fA-F]+\Z")
_DEC = re.compile(r"[0-9]+\Z")
_SIGNED_DEC = re.compile(r"-?[0-9]+\Z")
_U64 = 1 << 64


@dataclass(frozen=True)
class Vmcoreinfo:
    """Typed view of one VMCOREINFO note.

    SYMBOL values are runtime addresses already (never add KERNELOFFSET to them). NUMBER values
    are signed as the kernel prints them (``NUMBER(phys_base)`` may be negative).
    """

    osrelease: str
    page_size: int
    build_id: str | None = None
    kernel_offset: int | None = None
    crash_time: int | None = None
    symbols: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)
    lengths: dict[str, int] = field(default_factory=dict)
    numbers: dict[str, int] = field(default_factory=dict)
    lines: dict[str, str] = field(default_factory=dict)

    def symbol(self, name: str) -> int | None:
        return self.symbols.get(name)

    def size(self, name: str) -> int | None:
        return self.sizes.get(name)

    def offset(self, name: str) -> int | None:
        return self.offsets.get(name)

    def length(self, name: str) -> int | None:
        return self.lengths.get(name)

    def number(self, name: str) -> int | None:
        return self.numbers.get(name)

    def require(self, kind: str, name: str, purpose: str) -> int:
        """The value of ``KIND(name)``; raise naming the key and why it is needed if absent."""
        table = {
            "SYMBOL": self.symbols,
            "SIZE": self.sizes,
            "OFFSET": self.offsets,
            "LENGTH": self.lengths,
            "NUMBER": self.numbers,
        }[kind]
        value = table.get(name)
        if value is None:
            raise VmcoreinfoMissingError(f"VMCOREINFO lacks {kind}({name}), needed for {purpose}")
        return value


def _parse_hex(text: str) -> int | None:
    return int(text, 16) if _HEX.match(text) else None


def _parse_unsigned(text: str) -> int | None:
    """Decimal, or hex with 0x as makedumpfile also accepts (some arch code prints 0x…)."""
    if _DEC.match(text):
        return int(text)
    if text[:2] in ("0x", "0X") and _HEX.match(text):
        return int(text, 16)
    return None


def _parse_signed(text: str) -> int | None:
    if _SIGNED_DEC.match(text):
        return int(text)
    return _parse_unsigned(text)


def parse_vmcoreinfo(data: bytes, origin: str = "VMCOREINFO") -> Vmcoreinfo:
    """Parse the note text. ``origin`` names the input in error messages."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise VmcoreinfoError(
            f"{origin}: VMCOREINFO has a non-ASCII byte at offset {exc.start}"
        ) from None
    lines: dict[str, str] = {}
    typed: dict[str, dict[str, int]] = {k: {} for k in ("SYMBOL", "SIZE", "OFFSET", "LENGTH")}
    typed["NUMBER"] = {}
    for lineno, line in enumerate(text.split("\n"), 1):
        key, sep, value = line.partition("=")
        if not sep or not key:
            continue
        if key in lines:
            # makedumpfile takes the first line with a given key; so do we.
            continue
        lines[key] = value
        match = _TYPED_KEY.match(key)
        if match:
            kind, name = match.groups()
            parser = {"SYMBOL": _parse_hex, "NUMBER": _parse_signed}.get(kind, _parse_unsigned)
            number = parser(value)
            if number is None or not -_U64 // 2 <= number < _U64:
                raise VmcoreinfoError(
                    f"{origin}: VMCOREINFO line {lineno}: {_clip(line)}: bad {kind} value"
                )
            typed[kind][name] = number
        elif key in ("PAGESIZE", "CRASHTIME"):
            if _parse_unsigned(value) is None:
                raise VmcoreinfoError(
                    f"{origin}: VMCOREINFO line {lineno}: {_clip(line)}: not a number"
                )
        elif key in ("KERNELOFFSET", "BUILD-ID") and _parse_hex(value) is None:
            raise VmcoreinfoError(
                f"{origin}: VMCOREINFO line {lineno}: {_clip(line)}: not hexadecimal"
            )
    osrelease = lines.get("OSRELEASE")
    if not osrelease:
        raise VmcoreinfoMissingError(f"{origin}: VMCOREINFO has no OSRELEASE line")
    if "PAGESIZE" not in lines:
        raise VmcoreinfoMissingError(f"{origin}: VMCOREINFO has no PAGESIZE line")
    page_size = _parse_unsigned(lines["PAGESIZE"]) or 0
    if page_size < 512 or page_size & (page_size - 1) or page_size > 1 << 20:
        raise VmcoreinfoError(f"{origin}: VMCOREINFO PAGESIZE={page_size} is not a page size")
    crash_time = lines.get("CRASHTIME")
    kernel_offset = lines.get("KERNELOFFSET")
    return Vmcoreinfo(
        osrelease=osrelease,
        page_size=page_size,
        build_id=lines.get("BUILD-ID"),
        kernel_offset=None if kernel_offset is None else int(kernel_offset, 16),
        crash_time=None if crash_time is None else _parse_unsigned(crash_time),
        symbols=typed["SYMBOL"],
        sizes=typed["SIZE"],
        offsets=typed["OFFSET"],
        lengths=typed["LENGTH"],
        numbers=typed["NUMBER"],
        lines=lines,
    )


def _clip(line: str) -> str:
    """A line as it may appear in a one-line message: bounded and printable."""
    shown = line if len(line) <= 80 else line[:77] + "..."
    return shown.encode("unicode_escape").decode("ascii")
