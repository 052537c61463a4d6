"""What happens once the capture is over: KDUMP_FAIL_CMD on failure, otherwise a reboot.

KDUMP_FAIL_CMD runs through ``/bin/sh -c``.  That is a deliberate exception to "no shell strings
from config values": the value *is* a command, kdump-tools documents it as one and ships
``KDUMP_FAIL_CMD="echo 'makedumpfile FAILED.'; /bin/bash; reboot -f"`` as its example, which only
a shell can run (``shlex.split`` would hand ``echo`` the words ``;`` and ``/bin/bash``).  The file
is root's and only root can write it, so the shell adds no power an attacker lacks.  kdump-tools'
own defect is the opposite one: it expands the variable without ``eval``, so its example merely
echoes its own text.  Like kdump-tools, the command replaces the reboot.

Under systemd the reboot is systemd's: kdump-tools-dump.service has ``SuccessAction=`` and
``FailureAction=reboot-force``, which act once the unit has ended and its last lines have reached
the journal (a Reboot() call from inside the unit would race them).  Without systemd (a capture
initramfs whose init runs savecore) it is ``reboot -f``: sync, then the reboot system call, behind
:class:`Power` so tests never reboot the host.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from typing import Protocol

from kdumpd.system import SystemRoot

_LINUX_REBOOT_CMD_RESTART = 0x01234567


class Power(Protocol):
    def reboot(self) -> None: ...


class KernelPower:
    """``reboot -f``: flush the file systems, then restart through the kernel at once."""

    def reboot(self) -> None:
        os.sync()
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.reboot(_LINUX_REBOOT_CMD_RESTART) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"reboot: {os.strerror(err)}")


def systemd_running(root: SystemRoot) -> bool:
    """sd_booted(): systemd is PID 1 when /run/systemd/system exists."""
    return root.path("/run/systemd/system").is_dir()


def power_for(root: SystemRoot) -> Power | None:
    """How to reboot when savecore is done; None when systemd's unit actions do it."""
    return None if systemd_running(root) else KernelPower()


def fail_command_argv(command: str) -> list[str]:
    """KDUMP_FAIL_CMD as run: a shell command, as documented (see the module doc)."""
    return ["/bin/sh", "-c", command]


def run_fail_command(command: str) -> int:
    """Run KDUMP_FAIL_CMD on the console; its exit status."""
    try:
        return subprocess.run(fail_command_argv(command), check=False).returncode
    except OSError as exc:
        print(f"kdumpd-capture: KDUMP_FAIL_CMD could not run: {exc.strerror}", flush=True)
        return 127
