"""HOSTTAG: the prefix of a remote dump directory, ``<ip>-<stamp>`` or ``<hostname>-<stamp>``.

kdump-tools takes the last ``inet`` address that ``ip addr show up`` prints, retried five times a
second apart while the network settles, and falls back to the host name.  Here the addresses come
straight from the kernel (SIOCGIFADDR on every interface that is up), without the ``ip`` binary.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import time
from collections.abc import Callable

_SIOCGIFFLAGS = 0x8913
_SIOCGIFADDR = 0x8915
_IFF_UP = 0x1
_IFF_LOOPBACK = 0x8
ADDRESS_TRIES = 5


def _ifreq(sock: socket.socket, name: str, request: int) -> bytes:
    return fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))


def ipv4_addresses() -> list[str]:
    """IPv4 addresses of the interfaces that are up, loopback excluded, in interface order."""
    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _index, name in socket.if_nameindex():
            try:
                flags = struct.unpack_from("H", _ifreq(sock, name, _SIOCGIFFLAGS), 16)[0]
                if not flags & _IFF_UP or flags & _IFF_LOOPBACK:
                    continue
                addr = _ifreq(sock, name, _SIOCGIFADDR)[20:24]
            except OSError:  # no IPv4 address on this interface
                continue
            found.append(socket.inet_ntoa(addr))
    return found


def host_tag(
    hosttag: str,
    addresses: Callable[[], list[str]] = ipv4_addresses,
    hostname: Callable[[], str] = socket.gethostname,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """The directory prefix for HOSTTAG ``ip`` or ``hostname``."""
    if hosttag == "ip":
        for attempt in range(ADDRESS_TRIES):
            found = addresses()
            if found:
                return found[0]
            if attempt + 1 < ADDRESS_TRIES:
                sleep(1.0)
    return hostname()
