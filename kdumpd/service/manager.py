"""What the kdumpd daemon does, as plain Python: no bus, no asyncio (``interface.py`` adds those).

Every method reads the machine afresh through a SystemRoot, so what the bus shows is what
``kdump-config`` would show; the mutating ones take ports for the kernel, systemd, the crash
trigger and external commands, so tests drive them on a fake machine.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Protocol

from kdumpd import arming
from kdumpd.arming import (
    Arming,
    ArmRecord,
    ensure_links,
    plan_from_config,
    read_loaded,
    read_record,
    running_release,
)
from kdumpd.config import Config, load_config
from kdumpd.config_write import write_config
from kdumpd.errors import ConfigError, KdumpdError, SystemReadError
from kdumpd.kexec import (
    ArmError,
    BusyError,
    KexecFailedError,
    KexecPort,
    KexecUnavailableError,
    NotReservedError,
)
from kdumpd.readiness import assess_machine
from kdumpd.savecore.layout import STATUS_COMPLETE
from kdumpd.service.dumps import DumpIndex, DumpInfo
from kdumpd.service.names import ARMING_UNIT
from kdumpd.sshkey import Runner, propagate_key, run_command
from kdumpd.system import SystemRoot

TEST_STATE_FILE = "/var/lib/kdump/test-crash.json"
BOOT_ID = "/proc/sys/kernel/random/boot_id"
SYSRQ_TRIGGER = "/proc/sysrq-trigger"
MAX_CHANGES = 64
MAX_VALUE = 4096
_ARM_ERRORS: dict[str, type[ArmError]] = {
    cls.__name__: cls
    for cls in (NotReservedError, KexecFailedError, KexecUnavailableError, BusyError)
}


class NotArmedError(KdumpdError):
    """A test crash was asked for while no crash kernel is loaded."""


class UnitControl(Protocol):
    """systemd's side of arming (``kdump-tools.service``); absent when systemd is not PID 1."""

    def start(self, unit: str) -> bool:
        """Start (or restart) the unit and wait; True when it ended up active."""
        ...

    def stop(self, unit: str) -> None: ...

    def set_enabled(self, unit: str, enabled: bool) -> None: ...


class CrashTrigger(Protocol):
    def crash(self) -> None: ...


class SysrqTrigger:
    """The real thing: ``echo c > /proc/sysrq-trigger`` (under the machine root)."""

    def __init__(self, root: SystemRoot) -> None:
        self.path = root.path(SYSRQ_TRIGGER)

    def crash(self) -> None:
        os.sync()
        with open(self.path, "w") as f:
            f.write("c")


@dataclass(frozen=True)
class Status:
    """The Manager properties (D-Bus names in :meth:`properties`)."""

    state: str
    armed: bool
    problems: tuple[tuple[str, str], ...]
    crashkernel_parameter: str
    crashkernel_reserved: int
    crashkernel_suggested: int
    dump_mode: str
    core_dir: str
    target: str
    kernel_path: str
    initrd_path: str
    kexec_command_line: str
    last_test: Mapping[str, str | int] = field(default_factory=dict)

    def properties(self) -> dict[str, object]:
        return {
            "State": self.state,
            "Armed": self.armed,
            "Problems": [list(p) for p in self.problems],
            "CrashkernelParameter": self.crashkernel_parameter,
            "CrashkernelReserved": self.crashkernel_reserved,
            "CrashkernelSuggested": self.crashkernel_suggested,
            "DumpMode": self.dump_mode,
            "CoreDir": self.core_dir,
            "Target": self.target,
            "KernelPath": self.kernel_path,
            "InitrdPath": self.initrd_path,
            "KexecCommandLine": self.kexec_command_line,
            "LastTest": dict(self.last_test),
        }


@dataclass
class CrashTestRecord:
    """A test crash, pending until the next boot shows whether it produced a dump."""

    id: str
    requested_us: int
    boot_id: str
    state: str = "pending"  # pending | success | failed
    dump_id: str = ""
    dump_status: str = ""

    def as_property(self) -> dict[str, str | int]:
        return {
            "Id": self.id,
            "State": self.state,
            "Requested": self.requested_us,
            "DumpId": self.dump_id,
            "DumpStatus": self.dump_status,
        }


def evaluate_test(
    test: CrashTestRecord, boot_id: str, dumps: Mapping[str, DumpInfo]
) -> CrashTestRecord:
    """Settle a pending test: a dump stamped at or after the request (stamps have minute
    resolution) answers it; a new boot without such a dump means the capture failed."""
    if test.state != "pending":
        return test
    floor = test.requested_us - test.requested_us % 60_000_000
    found = sorted((d for d in dumps.values() if d.timestamp_us >= floor), key=lambda d: d.id)
    if found:
        dump = found[0]
        state = "success" if dump.status == STATUS_COMPLETE else "failed"
        return CrashTestRecord(
            **{**asdict(test), "state": state, "dump_id": dump.id, "dump_status": dump.status}
        )
    if boot_id and test.boot_id and boot_id != test.boot_id:
        return CrashTestRecord(**{**asdict(test), "state": "failed"})
    return test


def variant_text(name: str, value: object) -> str:
    """A SetConfig value as the file's text: strings as they are, booleans 1/0, integers."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        if len(value) > MAX_VALUE:
            raise ConfigError(f"{name}: value longer than {MAX_VALUE} characters")
        return value
    raise ConfigError(f"{name}: expected a string, boolean or integer, got {type(value).__name__}")


class Manager:
    def __init__(
        self,
        root: SystemRoot,
        kexec: KexecPort,
        units: UnitControl | None = None,
        trigger: CrashTrigger | None = None,
        runner: Runner = run_command,
    ) -> None:
        self.root = root
        # Below the 25 s clients wait by default, so a waiting caller gets Busy, not a timeout.
        self.arming = Arming(root, kexec, lock_timeout=20.0)
        self.units = units
        self.trigger = trigger or SysrqTrigger(root)
        self.runner = runner
        self.index = DumpIndex(root)

    # -- reading -------------------------------------------------------------------------------

    def config(self) -> Config:
        try:
            return load_config(self.root)
        except SystemReadError as exc:  # the file exists but cannot be read: a config problem
            raise ConfigError(str(exc)) from exc

    def status(self) -> Status:
        try:
            report = assess_machine(self.root)
        except KdumpdError as exc:  # config unreadable or invalid: say so, keep serving
            loaded = bool(read_loaded(self.root))
            return Status(
                state="ready" if loaded else "not-ready",
                armed=loaded,
                problems=(("config-invalid", str(exc)),),
                crashkernel_parameter="",
                crashkernel_reserved=self.root.read_int(arming.CRASH_SIZE) or 0,
                crashkernel_suggested=0,
                dump_mode="kdump",
                core_dir="",
                target="",
                kernel_path="",
                initrd_path="",
                kexec_command_line="",
                last_test=self.last_test(),
            )
        problems = [(p.code, p.message) for p in report.problems]
        record = read_record(self.root)
        if record and not record.ok and not report.armed:
            problems.append(("load-failed", f"the last load failed: {record.message}"))
        images = report.images
        return Status(
            state=report.state,
            armed=report.armed,
            problems=tuple(problems),
            crashkernel_parameter=report.expected.param.removeprefix("crashkernel="),
            crashkernel_reserved=report.reserved,
            crashkernel_suggested=(report.suggested.mib or 0) << 20,
            dump_mode=report.dump_mode,
            core_dir=report.config.coredir,
            target=report.config.target,
            kernel_path=images.kernel if images else "",
            initrd_path=(images.initrd or "") if images else "",
            kexec_command_line=report.cmdline,
            last_test=self.last_test(),
        )

    def dumps(self) -> dict[str, DumpInfo]:
        try:
            coredir = self.config().coredir
        except KdumpdError:
            return {}
        return self.index.scan(coredir)

    def last_test(self) -> dict[str, str | int]:
        test = self._read_test()
        if test is None:
            return {"State": "none"}
        settled = evaluate_test(test, self._boot_id(), self.dumps())
        if settled != test:
            self._write_test(settled)
        return settled.as_property()

    def get_config(self) -> dict[str, str]:
        config = self.config()
        return dict(config.values) | dict(config.unknown)

    def describe(self, status: Status, dumps: Mapping[str, DumpInfo]) -> str:
        """Everything at once as JSON (like hostname1's Describe), for web consoles and scripts."""
        data = status.properties() | {
            "Root": str(self.root.base),
            "Dumps": [d.properties() for d in sorted(dumps.values(), key=lambda d: d.id)],
        }
        return json.dumps(data, sort_keys=True)

    # -- changing ------------------------------------------------------------------------------

    def arm(self, enable: bool = True) -> None:
        config = self.config()
        if not config.use_kdump:
            if not enable:
                raise ConfigError(f"{config.path}: USE_KDUMP=0: kdump is disabled")
            config = write_config(self.root, {"USE_KDUMP": "1"})
        if self.units is not None:
            if enable:
                self.units.set_enabled(ARMING_UNIT, True)
            self._start_unit()
        else:
            ensure_links(self.root, running_release(self.root))
            self.arming.load(plan_from_config(self.root, config))

    def disarm(self, disable: bool = True) -> None:
        if disable and self.config().use_kdump:
            write_config(self.root, {"USE_KDUMP": "0"})
        if self.units is None:
            self.arming.unload()
            return
        # Under systemd the unit's ExecStop unloads; this sandbox cannot (no CAP_SYS_BOOT).
        if disable:
            self.units.set_enabled(ARMING_UNIT, False)
        self.units.stop(ARMING_UNIT)
        if read_loaded(self.root):
            raise KexecFailedError(
                f"the capture kernel is still loaded after stopping {ARMING_UNIT}: "
                f"see 'journalctl -u {ARMING_UNIT}'"
            )

    def reload(self) -> None:
        config = self.config()
        if not config.use_kdump:
            raise ConfigError(f"{config.path}: USE_KDUMP=0: kdump is disabled, nothing to reload")
        if self.units is not None:
            self._start_unit(restart=True)  # the unit's stop unloads, its start loads
        else:
            ensure_links(self.root, running_release(self.root))
            self.arming.reload(plan_from_config(self.root, config))

    def set_config(self, changes: Mapping[str, object], rearm: bool = True) -> None:
        if len(changes) > MAX_CHANGES:
            raise ConfigError(f"too many changes at once ({len(changes)} > {MAX_CHANGES})")
        texts = {name: variant_text(name, value) for name, value in changes.items()}
        for name, text in texts.items():
            if ".." in text.split("/"):
                raise ConfigError(f"{name}: '..' in a path is not accepted, found {text!r}")
        was_loaded = bool(read_loaded(self.root))
        config = write_config(self.root, {k: (v or None) for k, v in texts.items()})
        if not rearm or not was_loaded:
            return
        if config.use_kdump:
            self.reload()
        else:
            self.disarm(disable=False)

    def prepare_test_crash(self) -> CrashTestRecord:
        """Record a pending test; the caller then triggers the crash (after replying)."""
        if not read_loaded(self.root):
            raise NotArmedError(
                "no crash kernel is loaded: a test crash would reboot without saving a dump "
                "(arm first)"
            )
        test = CrashTestRecord(uuid.uuid4().hex[:12], time.time_ns() // 1000, self._boot_id())
        self._write_test(test)
        return test

    def crash(self) -> None:
        self.trigger.crash()

    def propagate_key(self) -> str:
        done = propagate_key(self.root, self.config(), self.runner, batch=True)
        return done.messages()[-1]

    def delete_dump(self, dump_id: str) -> None:
        self.index.delete(self.config().coredir, dump_id)

    # -- helpers -------------------------------------------------------------------------------

    def _start_unit(self, restart: bool = False) -> None:
        assert self.units is not None
        if not restart and read_loaded(self.root):
            return
        started = time.time()
        if self.units.start(ARMING_UNIT):
            return
        record: ArmRecord | None = read_record(self.root)
        if record and not record.ok and record.time >= started:
            raise _ARM_ERRORS.get(record.error, KexecFailedError)(record.message)
        raise KexecFailedError(f"{ARMING_UNIT} failed: see 'journalctl -u {ARMING_UNIT}'")

    def _boot_id(self) -> str:
        return (self.root.read_text(BOOT_ID) or "").strip()

    def _read_test(self) -> CrashTestRecord | None:
        try:
            data = json.loads(self.root.read_text(TEST_STATE_FILE) or "null")
            return CrashTestRecord(**data) if isinstance(data, dict) else None
        except (KdumpdError, ValueError, TypeError):
            return None

    def _write_test(self, test: CrashTestRecord) -> None:
        path = self.root.path(TEST_STATE_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(test)))
        os.replace(tmp, path)
