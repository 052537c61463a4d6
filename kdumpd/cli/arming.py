"""``kdump-config load|unload|reload|try-reload|propagate``.

Each goes through kdumpd when it runs (so the bus, systemd and the CLI see one story, and output
is the same either way) and acts on the machine directly otherwise, or with ``--local`` (what
``kdump-tools.service`` uses, since kdumpd itself starts that unit).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence

from dbus_fast import Variant

from kdumpd.arming import Arming, kernel_updates_hotplug, plan_from_config, read_loaded
from kdumpd.config import Config, load_config
from kdumpd.kexec import port_for
from kdumpd.service.client import call_daemon
from kdumpd.sshkey import propagate_key
from kdumpd.system import SystemRoot

LOADED = "loaded kdump kernel"
UNLOADED = "unloaded kdump kernel"


def _say(*lines: str) -> None:
    for line in lines:
        print(line)


def _warn(*lines: str) -> None:
    for line in lines:
        print(f"kdump-config: {line}", file=sys.stderr)


def _disabled(config: Config) -> bool:
    if config.use_kdump:
        return False
    _warn(f"kdump is disabled (USE_KDUMP=0 in {config.path}): not loading")
    return True


def _daemon(root: SystemRoot, local: bool, member: str, options: dict[str, bool]) -> bool:
    if local:
        return False
    body = [{k: Variant("b", v) for k, v in options.items()}] if member != "Reload" else []
    return call_daemon(root, member, "a{sv}" if body else "", body)


def load(root: SystemRoot, local: bool = False) -> int:
    config = load_config(root)
    if _disabled(config):
        return 0
    if not _daemon(root, local, "Arm", {"enable": False}):
        record = Arming(root, port_for(root)).load(plan_from_config(root, config))
        _warn(*record.warnings)
    _say(LOADED)
    return 0


def unload(root: SystemRoot, local: bool = False) -> int:
    if not _daemon(root, local, "Disarm", {"disable": False}):
        Arming(root, port_for(root)).unload()
    _say(UNLOADED)
    return 0


def reload(root: SystemRoot, local: bool = False) -> int:
    config = load_config(root)
    if _disabled(config):
        return 0
    if not _daemon(root, local, "Reload", {}):
        record = Arming(root, port_for(root)).reload(plan_from_config(root, config))
        _warn(*record.warnings)
    _say(UNLOADED, LOADED)
    return 0


def try_reload(root: SystemRoot, local: bool = False) -> int:
    """Reload only when armed (the udev hotplug rule), and not when the kernel does it itself."""
    if not read_loaded(root):
        return 0
    if kernel_updates_hotplug(root):
        _say("the kernel updates the crash kernel on hotplug itself (crash_hotplug=1): no reload")
        return 0
    return reload(root, local)


def _interactive(argv: Sequence[str]) -> tuple[int, str]:
    """ssh-copy-id may ask for the remote password: give it the terminal."""
    try:
        return subprocess.run(list(argv), check=False).returncode, ""
    except FileNotFoundError:
        return 127, f"{argv[0]}: not installed"


def propagate(root: SystemRoot, local: bool = False) -> int:
    # Always local: the password prompt needs this terminal, which the daemon does not have.
    done = propagate_key(root, load_config(root), runner=_interactive)
    _say(*done.messages())
    return 0


COMMANDS: dict[str, tuple[Callable[[SystemRoot, bool], int], str]] = {
    "load": (load, "load the crash kernel (arm kdump)"),
    "unload": (unload, "unload the crash kernel"),
    "reload": (reload, "unload then load the crash kernel"),
    "try-reload": (try_reload, "reload only if loaded (hotplug)"),
    "condreload": (try_reload, "same as try-reload"),
    "propagate": (propagate, "send the SSH dump key to the SSH target"),
}
