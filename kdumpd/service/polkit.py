"""Who may change things: root always, others as polkit decides, nobody else without polkit.

The subject is the caller's unique bus name (polkit's "system-bus-name" subject), which polkit
resolves to a process and user itself, so a caller cannot claim another identity. A caller that
set ALLOW_INTERACTIVE_AUTHORIZATION on its message lets polkit ask for a password.
"""

from __future__ import annotations

from typing import Protocol

from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from kdumpd.errors import KdumpdError
from kdumpd.service.names import POLKIT_BUS_NAME, POLKIT_IFACE, POLKIT_PATH

ALLOW_USER_INTERACTION = 0x1
_POLKIT_ABSENT = (
    "org.freedesktop.DBus.Error.ServiceUnknown",
    "org.freedesktop.DBus.Error.NameHasNoOwner",
    "org.freedesktop.DBus.Error.Spawn.ChildExited",
    "org.freedesktop.DBus.Error.Spawn.ExecFailed",
    "org.freedesktop.DBus.Error.Spawn.ServiceNotFound",
)


class NotAuthorizedError(KdumpdError):
    """polkit (or its absence) denied the caller."""


class InteractionRequiredError(NotAuthorizedError):
    """polkit would allow the caller after authentication, but the call forbade interaction."""


class Authority(Protocol):
    async def check(self, sender: str, action: str, interactive: bool) -> None:
        """Return when ``sender`` may perform ``action``; raise NotAuthorizedError otherwise."""
        ...


async def _call(bus: MessageBus, message: Message) -> Message:
    reply = await bus.call(message)
    assert reply is not None  # method calls without NO_REPLY_EXPECTED always get a reply
    return reply


class PolkitAuthority:
    """Asks ``org.freedesktop.PolicyKit1`` on the bus the daemon is connected to."""

    def __init__(self, bus: MessageBus) -> None:
        self.bus = bus

    async def _caller_uid(self, sender: str) -> int:
        reply = await _call(
            self.bus,
            Message(
                destination="org.freedesktop.DBus",
                path="/org/freedesktop/DBus",
                interface="org.freedesktop.DBus",
                member="GetConnectionUnixUser",
                signature="s",
                body=[sender],
            ),
        )
        if reply.message_type == MessageType.ERROR:
            raise NotAuthorizedError("the caller left the bus before it could be identified")
        return int(reply.body[0])

    async def check(self, sender: str, action: str, interactive: bool) -> None:
        if await self._caller_uid(sender) == 0:
            return
        reply = await _call(
            self.bus,
            Message(
                destination=POLKIT_BUS_NAME,
                path=POLKIT_PATH,
                interface=POLKIT_IFACE,
                member="CheckAuthorization",
                signature="(sa{sv})sa{ss}us",
                body=[
                    ["system-bus-name", {"name": Variant("s", sender)}],
                    action,
                    {},
                    ALLOW_USER_INTERACTION if interactive else 0,
                    "",
                ],
            ),
        )
        if reply.message_type == MessageType.ERROR:
            if reply.error_name in _POLKIT_ABSENT:
                raise NotAuthorizedError(
                    f"{action}: polkit is not running on this system, so only root may do this"
                )
            detail = reply.body[0] if reply.body else reply.error_name
            raise NotAuthorizedError(f"{action}: polkit check failed: {detail}")
        authorized, challenge, _details = reply.body[0]
        if authorized:
            return
        if challenge and interactive:
            raise InteractionRequiredError(
                f"{action}: authentication is required, and no polkit authentication agent "
                "answered for this caller (run it from a desktop session or with pkttyagent)"
            )
        if challenge:
            raise InteractionRequiredError(
                f"{action}: authentication is required (call with interactive authorization "
                "allowed, e.g. busctl's default or gdbus call --interactive)"
            )
        raise NotAuthorizedError(f"{action}: not authorized by polkit")
