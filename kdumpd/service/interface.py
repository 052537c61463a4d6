"""The dbus-fast classes: properties, methods, the authorization gate and the error mapping.

They hold no logic of their own: properties read the daemon's current snapshot, methods check
polkit and hand the work to :class:`~kdumpd.service.manager.Manager` through the
:class:`Backend` (the daemon). Every failure leaves as a named error with a one-line message;
unexpected exceptions are logged and reported as ``Error.Failed`` without a traceback.

Signatures are given as D-Bus strings through :func:`signature`, which works with both the
dbus-fast of Debian 12 (1.84) and current releases while Python sees ordinary type hints.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

from dbus_fast import Message, MessageFlag, MessageType, PropertyAccess, Variant
from dbus_fast.errors import DBusError
from dbus_fast.service import ServiceInterface, dbus_property, method

from kdumpd.capture_kernel import CaptureKernelError
from kdumpd.errors import ConfigError, KdumpdError
from kdumpd.kexec import BusyError, KexecFailedError, KexecUnavailableError, NotReservedError
from kdumpd.service.dumps import DumpInfo, DumpNotFoundError
from kdumpd.service.manager import Manager, Status
from kdumpd.service.names import DUMP_IFACE, MANAGER_IFACE, Action, Error
from kdumpd.service.polkit import InteractionRequiredError, NotAuthorizedError

log = logging.getLogger("kdumpd")
F = TypeVar("F", bound=Callable[..., Any])

# The method call being handled; set by a bus message handler that runs before dispatch
# (dbus-fast's handlers do not receive the Message, but tasks copy this context).
CURRENT_CALL: ContextVar[Message | None] = ContextVar("CURRENT_CALL", default=None)


def remember_call(msg: Message) -> None:
    """``bus.add_message_handler`` hook: returns None so normal dispatch goes on."""
    if msg.message_type == MessageType.METHOD_CALL:
        CURRENT_CALL.set(msg)


def signature(*params: str, returns: str = "") -> Callable[[F], F]:
    """Attach D-Bus signatures to a handler, keeping its parameter names for introspection."""

    def attach(fn: F) -> F:
        real = inspect.signature(fn)
        names = list(real.parameters)[1:]
        if len(names) != len(params):
            raise TypeError(f"{fn.__name__}: {len(names)} parameters, {len(params)} signatures")
        fn.__signature__ = real.replace(  # type: ignore[attr-defined]
            parameters=[
                real.parameters["self"],
                *(
                    real.parameters[n].replace(annotation=s)
                    for n, s in zip(names, params, strict=True)
                ),
            ],
            return_annotation=returns or inspect.Signature.empty,
        )
        return fn

    return attach


_ERROR_NAMES: tuple[tuple[type[BaseException], Error], ...] = (
    (InteractionRequiredError, Error.INTERACTIVE_AUTHORIZATION_REQUIRED),
    (NotAuthorizedError, Error.NOT_AUTHORIZED),
    (NotReservedError, Error.NOT_RESERVED),
    (BusyError, Error.BUSY),
    (KexecFailedError, Error.KEXEC_FAILED),
    (KexecUnavailableError, Error.KEXEC_FAILED),
    (CaptureKernelError, Error.KEXEC_FAILED),
    (ConfigError, Error.INVALID_CONFIG),
    (DumpNotFoundError, Error.NOT_FOUND),
    (KdumpdError, Error.FAILED),
)


def bus_error(exc: BaseException) -> DBusError:
    """The named error a caller sees for ``exc``."""
    if isinstance(exc, DBusError):
        return exc
    for cls, name in _ERROR_NAMES:
        if isinstance(exc, cls):
            return DBusError(name, str(exc).splitlines()[0] if str(exc) else cls.__name__)
    log.exception("unexpected error", exc_info=exc)
    return DBusError(Error.FAILED, f"internal error ({type(exc).__name__}); see kdumpd's log")


class Backend(Protocol):
    """What the interfaces need from the daemon."""

    status: Status

    async def run(
        self, what: str, action: Action, sender: str, interactive: bool, work: Callable[[], Any]
    ) -> Any:
        """Authorize ``sender`` for ``action``, run ``work`` in a worker thread, refresh state."""
        ...

    def describe(self) -> str: ...

    def schedule_crash(self) -> None:
        """Trigger the test crash shortly, once the reply has left."""
        ...


def _options(options: Mapping[str, Variant], allowed: Mapping[str, str]) -> dict[str, Any]:
    """Unwrap an ``a{sv}`` of options, refusing unknown keys and wrong types."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key not in allowed:
            raise DBusError(
                Error.INVALID_ARGS,
                f"unknown option {key!r} (known: {', '.join(allowed) or 'none'})",
            )
        if value.signature != allowed[key]:
            raise DBusError(
                Error.INVALID_ARGS,
                f"option {key!r}: expected type {allowed[key]}, got {value.signature}",
            )
        out[key] = value.value
    return out


def _caller() -> tuple[str, bool]:
    msg = CURRENT_CALL.get()
    if msg is None or not msg.sender:
        raise DBusError(Error.FAILED, "cannot identify the caller")
    return msg.sender, bool(msg.flags & MessageFlag.ALLOW_INTERACTIVE_AUTHORIZATION)


async def _guarded(backend: Backend, what: str, action: Action, work: Callable[[], Any]) -> Any:
    sender, interactive = _caller()
    try:
        return await backend.run(what, action, sender, interactive, work)
    except Exception as exc:
        raise bus_error(exc) from None


class ManagerInterface(ServiceInterface):
    """``org.kdumpd.Kdump1.Manager`` at ``/org/kdumpd/Kdump1``."""

    def __init__(self, backend: Backend, manager: Manager) -> None:
        super().__init__(MANAGER_IFACE)
        self._backend = backend
        self._manager = manager

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def State(self) -> str:
        return self._backend.status.state

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="b")
    def Armed(self) -> bool:
        return self._backend.status.armed

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="a(ss)")
    def Problems(self) -> list[list[str]]:
        return [list(p) for p in self._backend.status.problems]

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def CrashkernelParameter(self) -> str:
        return self._backend.status.crashkernel_parameter

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="t")
    def CrashkernelReserved(self) -> int:
        return self._backend.status.crashkernel_reserved

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="t")
    def CrashkernelSuggested(self) -> int:
        return self._backend.status.crashkernel_suggested

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def DumpMode(self) -> str:
        return self._backend.status.dump_mode

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def CoreDir(self) -> str:
        return self._backend.status.core_dir

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def Target(self) -> str:
        return self._backend.status.target

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def KernelPath(self) -> str:
        return self._backend.status.kernel_path

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def InitrdPath(self) -> str:
        return self._backend.status.initrd_path

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def KexecCommandLine(self) -> str:
        return self._backend.status.kexec_command_line

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="a{sv}")
    def LastTest(self) -> dict[str, Variant]:
        return variants(self._backend.status.last_test)

    @method()
    @signature("a{sv}")
    async def Arm(self, options: dict[str, Variant]) -> None:
        enable = _options(options, {"enable": "b"}).get("enable", True)
        await _guarded(self._backend, "Arm", Action.MANAGE, lambda: self._manager.arm(enable))

    @method()
    @signature("a{sv}")
    async def Disarm(self, options: dict[str, Variant]) -> None:
        disable = _options(options, {"disable": "b"}).get("disable", True)
        await _guarded(
            self._backend, "Disarm", Action.MANAGE, lambda: self._manager.disarm(disable)
        )

    @method()
    @signature()
    async def Reload(self) -> None:
        await _guarded(self._backend, "Reload", Action.MANAGE, self._manager.reload)

    @method()
    @signature(returns="a{sv}")
    def GetConfig(self) -> dict[str, Variant]:
        try:
            return {k: Variant("s", v) for k, v in self._manager.get_config().items()}
        except Exception as exc:
            raise bus_error(exc) from None

    @method()
    @signature("a{sv}", "a{sv}")
    async def SetConfig(self, changes: dict[str, Variant], options: dict[str, Variant]) -> None:
        rearm = _options(options, {"rearm": "b"}).get("rearm", True)
        values = {name: v.value for name, v in changes.items()}
        await _guarded(
            self._backend,
            "SetConfig",
            Action.MANAGE,
            lambda: self._manager.set_config(values, rearm),
        )

    @method()
    @signature(returns="s")
    def Describe(self) -> str:
        return self._backend.describe()

    @method()
    @signature("a{sv}")
    async def TestCrash(self, options: dict[str, Variant]) -> None:
        _options(options, {})
        await _guarded(
            self._backend, "TestCrash", Action.TEST_CRASH, self._manager.prepare_test_crash
        )
        self._backend.schedule_crash()

    @method()
    @signature(returns="s")
    async def PropagateKey(self) -> str:
        work = self._manager.propagate_key
        result: str = await _guarded(self._backend, "PropagateKey", Action.MANAGE, work)
        return result


def variants(values: Mapping[str, str | int | bool]) -> dict[str, Variant]:
    out = {}
    for key, value in values.items():
        if isinstance(value, bool):
            out[key] = Variant("b", value)
        elif isinstance(value, int):
            out[key] = Variant("t", value)
        else:
            out[key] = Variant("s", value)
    return out


class DumpInterface(ServiceInterface):
    """``org.kdumpd.Kdump1.Dump``: one saved dump."""

    def __init__(self, backend: Backend, manager: Manager, info: DumpInfo) -> None:
        super().__init__(DUMP_IFACE)
        self._backend = backend
        self._manager = manager
        self.info = info

    def update(self, info: DumpInfo) -> None:
        before, after = self.info.properties(), info.properties()
        self.info = info
        changed = {name: value for name, value in after.items() if before[name] != value}
        if changed:
            self.emit_properties_changed(changed)

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def Id(self) -> str:
        return self.info.id

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="t")
    def Timestamp(self) -> int:
        return self.info.timestamp_us

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def Path(self) -> str:
        return self.info.path

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def KernelRelease(self) -> str:
        return self.info.kernel_release

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="t")
    def Size(self) -> int:
        return self.info.size

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def Status(self) -> str:
        return self.info.status

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def Format(self) -> str:
        return self.info.format

    @dbus_property(access=PropertyAccess.READ)
    @signature(returns="s")
    def PanicMessage(self) -> str:
        return self.info.panic_message

    @method()
    @signature()
    async def Delete(self) -> None:
        dump_id = self.info.id
        await _guarded(
            self._backend, "Delete", Action.DELETE_DUMP, lambda: self._manager.delete_dump(dump_id)
        )
