"""Every name kdumpd shows on the bus: bus name, paths, interfaces, errors, polkit actions."""

from __future__ import annotations

import re
from enum import StrEnum

BUS_NAME = "org.kdumpd.Kdump1"
MANAGER_PATH = "/org/kdumpd/Kdump1"
DUMP_PATH_PREFIX = f"{MANAGER_PATH}/dump"
MANAGER_IFACE = "org.kdumpd.Kdump1.Manager"
DUMP_IFACE = "org.kdumpd.Kdump1.Dump"

ARMING_UNIT = "kdump-tools.service"
DAEMON_UNIT = "kdumpd.service"

POLKIT_BUS_NAME = "org.freedesktop.PolicyKit1"
POLKIT_PATH = "/org/freedesktop/PolicyKit1/Authority"
POLKIT_IFACE = "org.freedesktop.PolicyKit1.Authority"


class Action(StrEnum):
    """polkit action ids (dbus/org.kdumpd.kdump1.policy)."""

    MANAGE = "org.kdumpd.kdump1.manage"  # also PropagateKey
    TEST_CRASH = "org.kdumpd.kdump1.test-crash"
    DELETE_DUMP = "org.kdumpd.kdump1.delete-dump"


_ERROR_PREFIX = "org.kdumpd.Kdump1.Error."


class Error(StrEnum):
    """D-Bus error names; the message of each reply says what went wrong and what to do."""

    NOT_RESERVED = _ERROR_PREFIX + "NotReserved"
    INVALID_CONFIG = _ERROR_PREFIX + "InvalidConfig"
    KEXEC_FAILED = _ERROR_PREFIX + "KexecFailed"
    NOT_AUTHORIZED = _ERROR_PREFIX + "NotAuthorized"
    BUSY = _ERROR_PREFIX + "Busy"
    NOT_FOUND = _ERROR_PREFIX + "NotFound"
    FAILED = _ERROR_PREFIX + "Failed"
    # Standard names reused where they fit (dbus-systemd.md §1.3).
    INTERACTIVE_AUTHORIZATION_REQUIRED = (
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
    )
    INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"


_PLAIN = re.compile(r"[A-Za-z0-9]")


def dump_object_path(dump_id: str) -> str:
    """``/org/kdumpd/Kdump1/dump/<id>``; bytes outside [A-Za-z0-9] become ``_xx`` (like sd-bus)."""
    element = "".join(c if _PLAIN.fullmatch(c) else f"_{ord(c):02x}" for c in dump_id)
    return f"{DUMP_PATH_PREFIX}/{element or '_'}"
