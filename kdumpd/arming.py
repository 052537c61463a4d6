"""Arming and disarming: checks, the arm lock, the kernel call, panic_on_oops, the state record.

Shared by ``kdump-config load|unload|reload`` and the daemon. Everything touching the machine goes
through a :class:`~kdumpd.system.SystemRoot` and a :class:`~kdumpd.kexec.KexecPort`, so tests run
the whole sequence on a fake machine.

After every attempt the outcome is written to ``/var/lib/kdump/arm.state`` (atomically). sysfs
files cannot be watched with inotify, so this record is what tells the daemon that
``kexec_crash_loaded`` changed behind its back.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kdumpd.capture_kernel import (
    INITRD_LINK,
    capture_cmdline,
    image_exists,
    locate_capture_kernel,
    resolve_link,
    wanted_links,
)
from kdumpd.config import Config
from kdumpd.errors import ConfigError, SystemReadError
from kdumpd.kexec import (
    KEXEC_BINARY,
    METHOD_FILE_LOAD,
    METHOD_KEXEC,
    ArmError,
    BusyError,
    KexecFailedError,
    KexecPort,
    KexecUnavailableError,
    LoadContext,
    NotReservedError,
    explain_load_errno,
    kexec_argv,
    load_flags,
)
from kdumpd.system import SystemRoot

STATE_DIR = "/var/lib/kdump"
LOCK_FILE = f"{STATE_DIR}/arm.lock"
STATE_FILE = f"{STATE_DIR}/arm.state"
CRASH_LOADED = "/sys/kernel/kexec_crash_loaded"
CRASH_SIZE = "/sys/kernel/kexec_crash_size"
PANIC_ON_OOPS = "/proc/sys/kernel/panic_on_oops"
LOCKDOWN = "/sys/kernel/security/lockdown"
# Kernels ≥ 6.5 update the crash elfcorehdr themselves on CPU/memory hotplug when these read 1;
# /sys/kernel/crash_hotplug is where some distributions' tooling looks first.
CRASH_HOTPLUG = (
    "/sys/kernel/crash_hotplug",
    "/sys/devices/system/cpu/crash_hotplug",
    "/sys/devices/system/memory/crash_hotplug",
)
LOCK_TIMEOUT = 30.0
# Not a kdump-tools variable: kdump-tools always sets panic_on_oops=1. kdumpd reads it from the
# same file ("0" leaves the sysctl alone) for machines where an oops must not take the box down.
PANIC_ON_OOPS_VARIABLE = "KDUMP_PANIC_ON_OOPS"


@dataclass(frozen=True)
class ArmPlan:
    """What to load: system paths as the user sees them, and the capture command line."""

    kernel: str
    initrd: str | None
    cmdline: str
    kexec_args: tuple[str, ...] = ()  # KDUMP_KEXEC_ARGS, for the /sbin/kexec fallback only
    panic_on_oops: bool = True

    def command(self) -> list[str]:
        return kexec_argv(self.kernel, self.initrd, self.cmdline, self.kexec_args)


@dataclass(frozen=True)
class ArmRecord:
    """The last arm/disarm attempt, as stored in ``arm.state``."""

    action: str  # load | unload
    ok: bool
    method: str = ""
    command: list[str] = field(default_factory=list)
    error: str = ""  # the ArmError subclass name on failure
    message: str = ""
    time: float = 0.0
    warnings: list[str] = field(default_factory=list)


def panic_on_oops_wanted(config: Config) -> bool:
    text = dict(config.unknown).get(PANIC_ON_OOPS_VARIABLE, "1")
    if text not in ("0", "1"):
        raise ConfigError(
            f"{config.path}: {PANIC_ON_OOPS_VARIABLE}: expected 0 or 1, found {text!r}"
        )
    return text == "1"


def running_release(root: SystemRoot) -> str:
    """The running kernel's release, as the machine under ``root`` reports it."""
    text = root.read_text("/proc/sys/kernel/osrelease")
    return text.strip() if text else os.uname().release


def plan_from_config(root: SystemRoot, config: Config) -> ArmPlan:
    """What ``kdump-config load`` loads: the images kdump-tools would pick, the same cmdline."""
    images = locate_capture_kernel(root, config, running_release(root))
    cmdline = capture_cmdline((root.read_text("/proc/cmdline") or "").strip(), config)
    return ArmPlan(
        images.kernel, images.initrd, cmdline, config.kexec_args, panic_on_oops_wanted(config)
    )


def ensure_links(root: SystemRoot, release: str, replace: bool = False) -> list[str]:
    """Create the ``/var/lib/kdump`` kernel/initrd links for ``release`` where they are missing
    or dangling (all of them with ``replace``), as kdump-tools' load and symlinks do.
    Returns a message per link made; a link whose target does not exist is left alone."""
    made = []
    for link, target in wanted_links(root, release).items():
        if not image_exists(root, target):
            continue
        if not replace and image_exists(root, link):
            continue
        path = root.path(link)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            os.replace(tmp, path)  # atomic: the link is never missing in between
        except OSError as exc:
            raise ArmError(f"cannot link {link} to {target}: {exc.strerror}") from exc
        made.append(f"Creating symlink {link}.")
    return made


def missing_default_initrd(root: SystemRoot, config: Config, release: str) -> str | None:
    """The capture initrd to build for ``release`` before loading: the target of the default
    KDUMP_INITRD link when neither exists. None when there is one, or when KDUMP_INITRD names
    an initrd of the administrator's own (never built over)."""
    if config.initrd != INITRD_LINK or image_exists(root, INITRD_LINK):
        return None
    initrd = wanted_links(root, release)[INITRD_LINK]
    return None if image_exists(root, initrd) else initrd


def read_loaded(root: SystemRoot) -> bool | None:
    """``kexec_crash_loaded`` as a bool; None when the kernel has no crash-kexec support."""
    value = root.read_int(CRASH_LOADED)
    return None if value is None else value != 0


def kernel_updates_hotplug(root: SystemRoot) -> bool:
    """True when the kernel rewrites the crash kernel's memory map itself on hotplug."""
    for path in CRASH_HOTPLUG:
        try:
            if root.read_int(path) == 1:
                return True
        except SystemReadError:
            continue
    return False


def read_record(root: SystemRoot) -> ArmRecord | None:
    """The last recorded attempt; None when there is none or it is unreadable junk."""
    try:
        text = root.read_text(STATE_FILE)
        data = json.loads(text) if text else None
        return ArmRecord(**data) if isinstance(data, dict) else None
    except (SystemReadError, ValueError, TypeError):
        return None


def _lockdown_mode(root: SystemRoot) -> str | None:
    """The bracketed mode of ``/sys/kernel/security/lockdown`` ("none [integrity] …")."""
    try:
        text = root.read_text(LOCKDOWN) or ""
    except SystemReadError:
        return None
    start, end = text.find("["), text.find("]")
    mode = text[start + 1 : end] if 0 <= start < end else ""
    return mode if mode and mode != "none" else None


class Arming:
    """Load and unload the crash kernel on one machine, one attempt at a time."""

    def __init__(
        self, root: SystemRoot, port: KexecPort, lock_timeout: float = LOCK_TIMEOUT
    ) -> None:
        self.root = root
        self.port = port
        self.lock_timeout = lock_timeout

    def loaded(self) -> bool | None:
        return read_loaded(self.root)

    def load(self, plan: ArmPlan) -> ArmRecord:
        with self._locked():
            return self._recorded("load", lambda: self._load(plan))

    def unload(self) -> ArmRecord:
        with self._locked():
            return self._recorded("unload", self._unload)

    def reload(self, plan: ArmPlan) -> ArmRecord:
        """Unload then load under one lock hold, so no other arm slips in between."""
        with self._locked():
            self._recorded("unload", self._unload)
            return self._recorded("load", lambda: self._load(plan))

    # -- steps ---------------------------------------------------------------------------------

    def _load(self, plan: ArmPlan) -> ArmRecord:
        reserved = self._reserved()
        # Links are followed inside the root: /var/lib/kdump/vmlinuz -> /boot/... of the tree.
        kernel = self.root.path(resolve_link(self.root, plan.kernel))
        initrd = self.root.path(resolve_link(self.root, plan.initrd)) if plan.initrd else None
        for what, system_path, p in (
            ("crash kernel", plan.kernel, kernel),
            ("crash initrd", plan.initrd, initrd),
        ):
            if p is not None and not p.is_file():
                raise KexecFailedError(
                    f"{what} {system_path} does not exist: run 'kdump-config symlinks "
                    "$(uname -r)' or set KDUMP_KERNEL/KDUMP_INITRD"
                )
        method = METHOD_FILE_LOAD
        try:
            self.port.file_load(kernel, initrd, plan.cmdline, load_flags(initrd))
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                context = self._context(reserved, kernel, initrd)
                raise explain_load_errno(exc.errno or 0, context) from exc
            method = METHOD_KEXEC
            self._run_kexec(plan.command(), "load")
        warnings = self._apply_panic_on_oops() if plan.panic_on_oops else []
        return ArmRecord("load", True, method, plan.command(), warnings=warnings)

    def _unload(self) -> ArmRecord:
        if self.loaded() is False:
            return ArmRecord("unload", True, message="no crash kernel was loaded")
        method = METHOD_FILE_LOAD
        try:
            self.port.file_unload()
        except OSError as exc:
            if exc.errno != errno.ENOSYS:
                raise explain_load_errno(exc.errno or 0, self._context(None, None, None)) from exc
            method = METHOD_KEXEC
            self._run_kexec([KEXEC_BINARY, "-p", "-u"], "unload")
        return ArmRecord("unload", True, method)

    def _reserved(self) -> int:
        size = self.root.read_int(CRASH_SIZE)
        if size is None:
            raise KexecUnavailableError(
                f"this kernel has no crash dump support ({CRASH_SIZE} is missing): it needs "
                "CONFIG_KEXEC and CONFIG_CRASH_DUMP"
            )
        if size == 0:
            raise NotReservedError(
                "no memory is reserved for the crash kernel: add crashkernel= to the kernel "
                "command line (kdumpd's grub snippet does) and reboot"
            )
        return size

    def _context(
        self, reserved: int | None, kernel: Path | None, initrd: Path | None
    ) -> LoadContext:
        sizes = [p.stat().st_size for p in (kernel, initrd) if p is not None and p.exists()]
        return LoadContext(reserved, sum(sizes), _lockdown_mode(self.root), os.geteuid())

    def _run_kexec(self, argv: Sequence[str], what: str) -> None:
        status, stderr = self.port.run_kexec(argv)
        if status != 0:
            last = stderr.splitlines()[-1] if stderr else f"exit status {status}"
            if "not reserved" in stderr.lower():
                raise NotReservedError(f"kexec -p: {last}")
            raise KexecFailedError(f"{what} with {argv[0]} failed: {last}")

    def _apply_panic_on_oops(self) -> list[str]:
        """An oops must panic, or it never reaches the crash kernel. A failure here is a warning."""
        try:
            self.root.path(PANIC_ON_OOPS).write_text("1\n")
        except OSError as exc:
            return [f"could not set kernel.panic_on_oops=1: {exc.strerror}"]
        return []

    # -- lock and record -----------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        path = self.root.path(LOCK_FILE)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            hint = " (arming needs root)" if os.geteuid() != 0 else ""
            raise ArmError(f"cannot open the arm lock {LOCK_FILE}: {exc.strerror}{hint}") from exc
        try:
            deadline = time.monotonic() + self.lock_timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise BusyError(
                            f"another arm or disarm is still running (lock {LOCK_FILE} held "
                            f"for over {self.lock_timeout:.0f} s)"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def _recorded(self, action: str, step: Callable[[], ArmRecord]) -> ArmRecord:
        try:
            record = step()
        except ArmError as exc:
            self._write_record(ArmRecord(action, False, error=type(exc).__name__, message=str(exc)))
            raise
        self._write_record(record)
        return record

    def _write_record(self, record: ArmRecord) -> None:
        stamped = ArmRecord(**{**asdict(record), "time": time.time()})
        path = self.root.path(STATE_FILE)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(asdict(stamped), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError:
            # The record only serves watchers; the arm itself already happened.
            tmp.unlink(missing_ok=True)
