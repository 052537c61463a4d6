"""The small client ``kdump-config`` uses to go through kdumpd when it runs on the system bus.

It never starts the daemon (a CLI that works without it must not activate it) and only talks to
a daemon looking at the same machine root as the caller.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from dbus_fast import BusType, Message, MessageFlag, MessageType
from dbus_fast.aio import MessageBus
from dbus_fast.errors import DBusError

from kdumpd.errors import KdumpdError
from kdumpd.service.names import BUS_NAME, MANAGER_IFACE, MANAGER_PATH, Error
from kdumpd.system import SystemRoot

CALL_TIMEOUT = 300.0


class DaemonError(KdumpdError):
    """kdumpd answered with an error; ``name`` is its D-Bus error name."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        if name == Error.INVALID_CONFIG:
            self.exit_code = 2


async def _call(bus: MessageBus, member: str, signature: str = "", body: Any = ()) -> Any:
    reply = await bus.call(
        Message(
            destination=BUS_NAME,
            path=MANAGER_PATH,
            interface=MANAGER_IFACE,
            member=member,
            signature=signature,
            body=list(body),
            flags=MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION | MessageFlag.NO_AUTOSTART,
        )
    )
    assert reply is not None
    if reply.message_type == MessageType.ERROR:
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise DaemonError(reply.error_name or Error.FAILED, text or str(reply.error_name))
    return reply.body[0] if reply.body else None


async def _running_for(bus: MessageBus, root: SystemRoot) -> bool:
    reply = await bus.call(
        Message(
            destination="org.freedesktop.DBus",
            path="/org/freedesktop/DBus",
            interface="org.freedesktop.DBus",
            member="NameHasOwner",
            signature="s",
            body=[BUS_NAME],
        )
    )
    if reply is None or reply.message_type == MessageType.ERROR or not reply.body[0]:
        return False
    described = json.loads(await _call(bus, "Describe"))
    return bool(described.get("Root") == str(root.base))


async def _via_daemon(root: SystemRoot, member: str, signature: str, body: Any) -> bool:
    try:
        bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
    except (OSError, DBusError, ValueError):
        return False  # no system bus here: act locally
    try:
        if not await _running_for(bus, root):
            return False
        await asyncio.wait_for(_call(bus, member, signature, body), CALL_TIMEOUT)
        return True
    finally:
        bus.disconnect()


def call_daemon(root: SystemRoot, member: str, signature: str = "", body: Any = ()) -> bool:
    """Run a Manager method through kdumpd; False when kdumpd is not running for ``root``."""
    return asyncio.run(_via_daemon(root, member, signature, body))
