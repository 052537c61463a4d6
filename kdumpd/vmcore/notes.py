"""ELF note parsing: the PT_NOTE data of a vmcore (NT_PRSTATUS per CPU, VMCOREINFO, QEMU …)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from kdumpd.vmcore.errors import VmcoreFormatError

NT_PRSTATUS = 1
_HEADER = struct.Struct("<III")


@dataclass(frozen=True)
class Note:
    name: str
    type: int
    desc: bytes


def parse_notes(data: bytes, origin: str = "vmcore") -> list[Note]:
    """Split note data into notes (4-byte aligned name and desc, as Linux writes them on x86_64).

    An all-zero header or fewer than 12 bytes left end the list: the kernel pads unused note
    space with zeros. A note that claims more bytes than remain is an error, not a short read.
    """
    notes: list[Note] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        namesz, descsz, ntype = _HEADER.unpack_from(data, pos)
        if namesz == 0 and descsz == 0:
            break
        name_at = pos + _HEADER.size
        desc_at = name_at + _align4(namesz)
        end = desc_at + _align4(descsz)
        if desc_at + descsz > len(data):
            raise VmcoreFormatError(
                f"{origin}: ELF note at offset {pos} claims {namesz}+{descsz} bytes, "
                f"only {len(data) - name_at} remain in PT_NOTE"
            )
        name = data[name_at : name_at + namesz].split(b"\0", 1)[0].decode("latin-1")
        notes.append(Note(name, ntype, bytes(data[desc_at : desc_at + descsz])))
        pos = end
    return notes


def _align4(n: int) -> int:
    return (n + 3) & ~3
