"""``kdumpd``: the system bus service.

It keeps a snapshot of the machine (the Manager properties and the saved dumps) and refreshes it
when something changes, emitting PropertiesChanged and InterfacesAdded/Removed:

* its own methods refresh right after they ran;
* inotify on the config directory, ``/var/lib/kdump``, ``KDUMP_COREDIR`` and each dump directory
  catches edits behind its back, ``kdump-config`` runs and dumps being written;
* sysfs cannot be watched, so ``kexec_crash_loaded`` changes are seen through the arm record that
  every load/unload of ``kdumpd.arming`` rewrites in ``/var/lib/kdump``; a load by a foreign tool
  (``kexec -p`` by hand) is caught by a slow re-check every ``RECHECK`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from dbus_fast import BusType, MessageFlag, NameFlag, RequestNameReply, constants
from dbus_fast.aio import MessageBus

from kdumpd.config import CONFIG_PATH
from kdumpd.errors import KdumpdError
from kdumpd.kexec import port_for
from kdumpd.service.dumps import DumpInfo
from kdumpd.service.interface import DumpInterface, ManagerInterface, remember_call, variants
from kdumpd.service.manager import Manager, Status
from kdumpd.service.names import BUS_NAME, MANAGER_PATH, Action, dump_object_path
from kdumpd.service.polkit import Authority, PolkitAuthority
from kdumpd.service.units import SystemdUnits, systemd_running
from kdumpd.service.watch import Inotify
from kdumpd.system import SystemRoot

log = logging.getLogger("kdumpd")
RECHECK = 30.0
DEBOUNCE = 0.05
CRASH_DELAY = 1.0
STATE_DIR = "/var/lib/kdump"


class Daemon:
    """The live service: snapshot, exported objects, watches, serialized changes."""

    def __init__(self, bus: MessageBus, manager: Manager, authority: Authority) -> None:
        self.bus = bus
        self.manager = manager
        self.authority = authority
        self.status: Status = manager.status()
        self.dumps: dict[str, DumpInfo] = {}
        self.dump_objects: dict[str, DumpInterface] = {}
        self.interface = ManagerInterface(self, manager)
        self._lock = asyncio.Lock()
        self._inotify: Inotify | None = None
        self._pending: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # -- Backend -------------------------------------------------------------------------------

    async def run(
        self, what: str, action: Action, sender: str, interactive: bool, work: Callable[[], Any]
    ) -> Any:
        await self.authority.check(sender, action, interactive)
        log.info("%s called by %s", what, sender)
        async with self._lock:
            try:
                return await asyncio.to_thread(work)
            finally:
                self.refresh()

    def describe(self) -> str:
        return self.manager.describe(self.status, self.dumps)

    def schedule_crash(self) -> None:
        log.warning("test crash requested: crashing in %.0f s", CRASH_DELAY)
        self._loop.call_later(CRASH_DELAY, self.manager.crash)

    # -- snapshot ------------------------------------------------------------------------------

    def start(self) -> None:
        self.bus.export(MANAGER_PATH, self.interface)
        self._sync_dumps()
        try:
            self._inotify = Inotify()
            self._loop.add_reader(self._inotify.fileno(), self._on_inotify)
        except OSError as exc:
            log.warning("inotify unavailable (%s): changes are seen every %.0f s", exc, RECHECK)
        self._watch()
        self._loop.call_later(RECHECK, self._recheck)

    def refresh(self) -> None:
        """Re-read the machine; announce what changed. Never raises: the daemon keeps serving
        the last snapshot if the machine cannot be read."""
        self._pending = None
        try:
            self._refresh()
        except KdumpdError as exc:  # a machine file became unreadable
            log.warning("cannot read the machine state: %s", exc)
        except Exception:
            log.exception("refreshing the machine state failed")

    def _refresh(self) -> None:
        new = self.manager.status()
        old, self.status = self.status, new
        before, after = old.properties(), new.properties()
        changed = {k: v for k, v in after.items() if before[k] != v}
        if "LastTest" in changed:
            changed["LastTest"] = variants(new.last_test)
        if changed:
            self.interface.emit_properties_changed(changed)
        self._sync_dumps()
        self._watch()

    def _sync_dumps(self) -> None:
        current = self.manager.dumps()
        for dump_id in self.dump_objects.keys() - current.keys():
            obj = self.dump_objects.pop(dump_id)
            self.bus.unexport(dump_object_path(dump_id), obj)
        for dump_id, info in current.items():
            if dump_id in self.dump_objects:
                self.dump_objects[dump_id].update(info)
            else:
                obj = DumpInterface(self, self.manager, info)
                self.dump_objects[dump_id] = obj
                self.bus.export(dump_object_path(dump_id), obj)
        self.dumps = current

    # -- watching ------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Watch what the snapshot depends on. A directory watched only now may have changed
        before its watch existed, so a new watch asks for one more refresh."""
        if self._inotify is None:
            return
        root = self.manager.root
        paths = [str(PurePosixPath(CONFIG_PATH).parent), STATE_DIR]
        if self.status.core_dir:
            paths.append(self.status.core_dir)
            paths += [info.path for info in self.dumps.values()]
        known = set(self._inotify.watches.values())
        for system_path in paths:
            path = root.path(system_path)
            # Not there yet (a new KDUMP_COREDIR): watch where it will appear.
            while not path.is_dir() and path != root.base and path.parent != path:
                path = path.parent
            if path not in known and self._inotify.watch(path) is not None:
                known.add(path)
                self._schedule_refresh()

    def _on_inotify(self) -> None:
        assert self._inotify is not None
        if self._inotify.read():
            self._schedule_refresh()

    def _schedule_refresh(self) -> None:
        # Coalesce a burst (an editor's save, a dump being written) into one refresh.
        if self._pending is None:
            self._pending = self._loop.call_later(DEBOUNCE, self.refresh)

    def _recheck(self) -> None:
        self.refresh()
        self._loop.call_later(RECHECK, self._recheck)


def accept_combined_message_flags() -> None:
    """Work around dbus-fast 1.84 (Debian 12): its unmarshaller looks message flags up in a table
    of single flags, and a call with two set (NO_AUTO_START|ALLOW_INTERACTIVE_AUTHORIZATION = 6)
    raises KeyError in the reader and drops the daemon off the bus: any local user could stop it.
    Completing the table in place fixes it; newer versions already fall back and are unaffected.
    """
    table = constants.MESSAGE_FLAG_MAP
    for value in range(8):
        table.setdefault(value, MessageFlag(value))


async def serve(root: SystemRoot, bus_address: str | None) -> int:
    accept_combined_message_flags()
    bus = MessageBus(bus_address=bus_address, bus_type=BusType.SYSTEM)
    await bus.connect()
    bus.add_message_handler(remember_call)
    units = SystemdUnits() if systemd_running(root) else None
    manager = Manager(root, port_for(root), units=units)
    daemon = Daemon(bus, manager, PolkitAuthority(bus))
    daemon.start()
    reply = await bus.request_name(BUS_NAME, NameFlag.DO_NOT_QUEUE)
    if reply != RequestNameReply.PRIMARY_OWNER:
        log.error("cannot own %s (%s): is another kdumpd running?", BUS_NAME, reply.name)
        bus.disconnect()
        return 1
    log.info("kdumpd serving %s for %s", BUS_NAME, root.base)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    disconnected = asyncio.ensure_future(bus.wait_for_disconnect())  # type: ignore[no-untyped-call]
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({disconnected, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if stopping.done():
        bus.disconnect()
        return 0
    log.error("lost the connection to the system bus")
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kdumpd", description="kdump D-Bus service")
    parser.add_argument("--root", help="machine root (default: $KDUMPD_ROOT or /)")
    parser.add_argument(
        "--address", help="bus address (default: $DBUS_SYSTEM_BUS_ADDRESS or the system bus)"
    )
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="kdumpd: %(message)s",
        stream=sys.stderr,
    )
    root = SystemRoot.from_env(args.root)
    if not Path(root.base).is_dir():
        print(f"kdumpd: --root {root.base}: not a directory", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(root, args.address or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")))
    except (OSError, ValueError) as exc:
        print(f"kdumpd: cannot connect to the system bus: {exc}", file=sys.stderr)
        return 1
