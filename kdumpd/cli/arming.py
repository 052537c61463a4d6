"""``kdump-config load|unload|reload|try-reload|symlinks|propagate``.

load/unload/reload go through kdumpd when it runs (so the bus, systemd and the CLI tell one story
and the output is the same either way) and act on the machine directly otherwise, or with
``--local`` (what ``kdump-tools.service`` runs, since kdumpd itself starts that unit).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from kdumpd.arming import (
    Arming,
    ensure_links,
    kernel_updates_hotplug,
    missing_default_initrd,
    plan_from_config,
    read_loaded,
    running_release,
)
from kdumpd.capture_kernel import KDUMP_DIR, image_exists
from kdumpd.cli.context import EXIT_OK, Context, emit
from kdumpd.config import Config, load_config
from kdumpd.errors import KdumpdError, UsageError
from kdumpd.kexec import port_for
from kdumpd.system import SystemRoot

LOADED = "loaded kdump kernel"
UNLOADED = "unloaded kdump kernel"
POSTINST_HOOK = "/etc/kernel/postinst.d/kdump-tools"


class SymlinksError(KdumpdError):
    """``symlinks`` cannot link to that kernel version."""


def _warn(*lines: str) -> None:
    for line in lines:
        print(f"kdump-config: {line}", file=sys.stderr)


def _local(ctx: Context, name: str, args: list[str]) -> bool:
    """``--local`` is the only option these commands take."""
    extra = [a for a in args if a != "--local"]
    if extra:
        raise UsageError(f"{ctx.prog} {name}: unexpected argument {extra[0]!r}")
    return "--local" in args


def _disabled(config: Config) -> bool:
    if config.use_kdump:
        return False
    _warn(f"kdump is disabled (USE_KDUMP=0 in {config.path}): not loading")
    return True


def _via_daemon(root: SystemRoot, member: str, options: dict[str, bool] | None) -> bool:
    # Imported here: the bus library costs start-up time that `load --local` (the boot-time
    # arming unit, slow under emulation) never needs. Without it (a rescue or test image that
    # carries only the arming code) no daemon can be reached, so the command acts itself.
    try:
        from dbus_fast import Variant

        from kdumpd.service.client import call_daemon
    except ImportError:
        return False

    if options is None:
        return call_daemon(root, member)
    return call_daemon(root, member, "a{sv}", [{k: Variant("b", v) for k, v in options.items()}])


def _load_here(root: SystemRoot, config: Config, reload: bool) -> None:
    release = running_release(root)
    _build_missing_initrd(root, config, release)
    emit(*ensure_links(root, release))
    arming = Arming(root, port_for(root))
    plan = plan_from_config(root, config)
    record = arming.reload(plan) if reload else arming.load(plan)
    _warn(*record.warnings)


def load(ctx: Context, args: list[str]) -> int:
    local = _local(ctx, "load", args)
    config = load_config(ctx.root)
    if _disabled(config):
        return EXIT_OK
    if local or not _via_daemon(ctx.root, "Arm", {"enable": False}):
        _load_here(ctx.root, config, reload=False)
    emit(LOADED)
    return EXIT_OK


def unload(ctx: Context, args: list[str]) -> int:
    local = _local(ctx, "unload", args)
    if local or not _via_daemon(ctx.root, "Disarm", {"disable": False}):
        Arming(ctx.root, port_for(ctx.root)).unload()
    emit(UNLOADED)
    return EXIT_OK


def reload(ctx: Context, args: list[str]) -> int:
    local = _local(ctx, "reload", args)
    config = load_config(ctx.root)
    if _disabled(config):
        return EXIT_OK
    if local or not _via_daemon(ctx.root, "Reload", None):
        _load_here(ctx.root, config, reload=True)
    emit(UNLOADED, LOADED)
    return EXIT_OK


def try_reload(ctx: Context, args: list[str]) -> int:
    """Reload only when armed (the udev hotplug rule), and not when the kernel does it itself."""
    _local(ctx, "try-reload", args)
    if not read_loaded(ctx.root):
        return EXIT_OK
    if kernel_updates_hotplug(ctx.root):
        emit("the kernel updates the loaded crash kernel on hotplug (crash_hotplug=1): no reload")
        return EXIT_OK
    return reload(ctx, args)


def symlinks(ctx: Context, args: list[str]) -> int:
    """Point the /var/lib/kdump links at kernel ``<kver>``, building its initrd if missing."""
    if len(args) != 1 or args[0].startswith("-"):
        raise UsageError(f"{ctx.prog} symlinks: expected one KERNEL-VERSION")
    release = args[0]
    if "/" in release or release in (".", ".."):
        raise UsageError(f"{ctx.prog} symlinks: {release!r} is not a kernel version")
    root = ctx.root
    if read_loaded(root):
        raise SymlinksError("the crash kernel is loaded: run 'kdump-config unload' first")
    if not (
        image_exists(root, f"/boot/vmlinuz-{release}")
        or image_exists(root, f"/boot/vmlinux-{release}")
    ):
        raise SymlinksError(f"/boot/vmlinuz-{release} does not exist: is that kernel installed?")
    initrd = f"{KDUMP_DIR}/initrd.img-{release}"
    if not image_exists(root, initrd):
        _build_initrd(root, release, initrd)
    emit(*ensure_links(root, release, replace=True))
    return EXIT_OK


def _build_missing_initrd(root: SystemRoot, config: Config, release: str) -> None:
    """Build the running kernel's capture initrd if the default link has nothing to point at, as
    kdump-tools' load does: an install from a chroot (an installer, mmdebstrap) defers the build
    to the first boot. Only on this machine; elsewhere the readiness check names what is missing."""
    initrd = missing_default_initrd(root, config, release)
    if initrd is None or not _can_build_here(root):
        return
    _warn(f"{initrd} is missing: building it")
    _build_initrd(root, release, initrd)


def _can_build_here(root: SystemRoot) -> bool:
    """The kernel hook builds initrds for the machine it runs on, never for a tree under --root."""
    return str(root.base) == "/" and root.path(POSTINST_HOOK).exists()


def _build_initrd(root: SystemRoot, release: str, initrd: str) -> None:
    if not _can_build_here(root):
        raise SymlinksError(
            f"{initrd} does not exist: build it with {POSTINST_HOOK} {release} on that system"
        )
    import subprocess  # rarely needed: not part of the boot-time load's start-up

    status = subprocess.run([str(root.path(POSTINST_HOOK)), release], check=False).returncode
    if status != 0 or not image_exists(root, initrd):
        raise SymlinksError(f"{POSTINST_HOOK} {release} failed to build {initrd}")


def _interactive(argv: Sequence[str]) -> tuple[int, str]:
    """ssh-copy-id may ask for the remote password: give it the terminal."""
    import subprocess  # only propagate runs a program here

    try:
        return subprocess.run(list(argv), check=False).returncode, ""
    except FileNotFoundError:
        return 127, f"{argv[0]}: not installed"


def propagate(ctx: Context, args: list[str]) -> int:
    # Always here: the password prompt needs this terminal, which the daemon does not have.
    _local(ctx, "propagate", args)
    from kdumpd.sshkey import propagate_key  # SSH set-up stays out of the load path's imports

    done = propagate_key(ctx.root, load_config(ctx.root), runner=_interactive)
    emit(*done.messages())
    return EXIT_OK
