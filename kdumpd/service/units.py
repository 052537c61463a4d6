"""systemd's side of arming through pystemd: ``kdump-tools.service`` holds the armed state.

Used only when systemd is PID 1 (and the daemon looks at ``/``), so that ``systemctl status
kdump-tools``, Cockpit, ``kdump-config`` and the bus agree. pystemd is synchronous; the daemon
calls this from a worker thread.
"""

from __future__ import annotations

import time
from typing import Any

from kdumpd.system import SystemRoot

JOB_TIMEOUT = 180.0


def systemd_running(root: SystemRoot) -> bool:
    """systemd is PID 1 on this machine (``sd_booted()``), and we are looking at it, not a tree."""
    return str(root.base) == "/" and root.path("/run/systemd/system").is_dir()


class SystemdUnits:
    """:class:`~kdumpd.service.manager.UnitControl` over pystemd's systemd1 proxies."""

    def __init__(self, timeout: float = JOB_TIMEOUT) -> None:
        self.timeout = timeout

    @staticmethod
    def _unit(name: str) -> Any:
        from pystemd.systemd1 import Unit

        unit = Unit(name.encode())
        unit.load()
        return unit

    @staticmethod
    def _manager() -> Any:
        from pystemd.systemd1 import Manager

        manager = Manager()
        manager.load()
        return manager

    def _wait(self, proxy: Any) -> None:
        """Until the unit has no queued job (systemd replies to Start/Stop before running it)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            job_id, _path = proxy.Unit.Job
            if job_id == 0:
                return
            time.sleep(0.1)

    def start(self, unit: str) -> bool:
        proxy = self._unit(unit)
        # Restart also re-runs a oneshot that is "active (exited)" but whose load was undone.
        proxy.Unit.Restart(b"replace")
        self._wait(proxy)
        return bool(proxy.Unit.ActiveState == b"active")

    def stop(self, unit: str) -> None:
        proxy = self._unit(unit)
        proxy.Unit.Stop(b"replace")
        self._wait(proxy)

    def set_enabled(self, unit: str, enabled: bool) -> None:
        manager = self._manager()
        if enabled:
            manager.Manager.EnableUnitFiles([unit.encode()], False, True)
        else:
            manager.Manager.DisableUnitFiles([unit.encode()], False)
        manager.Manager.Reload()
