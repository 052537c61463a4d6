"""The daemon's logic without a bus: dump index, test-crash bookkeeping, config changes, the
systemd arming path, error names, inotify parsing."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from machines import Machine, build_machine

from kdumpd.arming import ArmRecord
from kdumpd.errors import ConfigError
from kdumpd.kexec import NotReservedError
from kdumpd.service import dumps, names
from kdumpd.service.interface import bus_error
from kdumpd.service.manager import CrashTestRecord, Manager, NotArmedError, evaluate_test
from kdumpd.service.polkit import InteractionRequiredError
from kdumpd.service.watch import IN_CREATE, Inotify, parse_events
from kdumpd.system import SystemRoot


class SimKernel:
    def __init__(self, root: Path) -> None:
        self.flag = root / "sys/kernel/kexec_crash_loaded"

    def file_load(self, kernel: Path, initrd: Path | None, cmdline: str, flags: int) -> None:
        self.flag.write_text("1\n")

    def file_unload(self) -> None:
        self.flag.write_text("0\n")

    def run_kexec(self, argv: object) -> tuple[int, str]:
        return 1, "unused"


class Trigger:
    crashed = 0

    def crash(self) -> None:
        self.crashed += 1


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = build_machine(tmp_path, loaded=False)
    m.write("/proc/sys/kernel/random/boot_id", "boot-1\n")
    return m


def manager(m: Machine, **kw: object) -> Manager:
    return Manager(SystemRoot(m.root), SimKernel(m.root), **kw)  # type: ignore[arg-type]


# -- dump index --------------------------------------------------------------------------------


def test_object_paths_escape_everything_but_alphanumerics() -> None:
    assert names.dump_object_path("202611260802") == "/org/kdumpd/Kdump1/dump/202611260802"
    assert names.dump_object_path("a.b-c_d") == "/org/kdumpd/Kdump1/dump/a_2eb_2dc_5fd"


def _flattened(release: str) -> bytes:
    head = b"makedumpfile".ljust(4096, b"\0")
    kdump = bytearray(512)
    kdump[:8] = b"KDUMP   "
    kdump[142 : 142 + len(release)] = release.encode()
    return head + struct.pack(">qq", 0, len(kdump)) + bytes(kdump)


def test_a_kdump_tools_directory_without_metadata(tmp_path: Path) -> None:
    d = tmp_path / "202611260802"
    d.mkdir()
    (d / "dump.202611260802").write_bytes(_flattened("6.1.0-56-amd64"))
    (d / "dmesg.202611260802").write_text("Kernel panic - not syncing: Fatal exception\n")
    info = dumps.read_dump_dir(d, "/var/crash/202611260802")
    assert info is not None
    assert (info.status, info.format, info.kernel_release) == (
        "complete",
        "flattened",
        "6.1.0-56-amd64",
    )
    assert info.panic_message == "Fatal exception"
    assert info.size == sum(p.stat().st_size for p in d.iterdir())


@pytest.mark.parametrize(
    ("files", "status", "fmt"),
    [
        ({"dmesg.202611260802": b"x"}, "dmesg-only", ""),
        ({"dump-incomplete": b"KDUMP   " + bytes(300)}, "incomplete", "kdump-compressed"),
        ({"vmcore.202611260802": b"\x7fELF" + bytes(60)}, "complete", "elf"),
        ({"dump.202611260802.xz": b"\xfd7zXZ"}, "complete", "xz-compressed"),
        ({"dump.202611260802": b"garbage"}, "complete", "unknown"),
        ({}, "incomplete", ""),
    ],
)
def test_status_and_format_come_from_the_files(
    tmp_path: Path, files: dict[str, bytes], status: str, fmt: str
) -> None:
    d = tmp_path / "202611260802"
    d.mkdir()
    for name, data in files.items():
        (d / name).write_bytes(data)
    info = dumps.read_dump_dir(d, "/var/crash/202611260802")
    assert info is not None and (info.status, info.format) == (status, fmt)


def test_metadata_fills_in_but_cannot_claim_a_missing_dump(tmp_path: Path) -> None:
    d = tmp_path / "202611260802"
    d.mkdir()
    (d / "dump-incomplete").write_bytes(b"KDUMP   ")
    meta = {
        "status": "complete",
        "kernel_release": "6.12.1",
        "timestamp_us": 123,
        "panic_message": ["not", "a string"],
        "format": "kdump-compressed",
    }
    (d / "metadata.json").write_text(json.dumps(meta))
    info = dumps.read_dump_dir(d, "/var/crash/202611260802")
    assert info is not None
    assert (info.status, info.kernel_release, info.timestamp_us) == ("incomplete", "6.12.1", 123)
    assert info.panic_message == ""


def test_junk_is_skipped_and_delete_stays_inside(tmp_path: Path) -> None:
    crash = tmp_path / "var/crash"
    crash.mkdir(parents=True)
    (crash / "kexec_cmd").write_text("x")
    (crash / "random").mkdir()
    outside = tmp_path / "precious"
    outside.mkdir()
    (crash / "202611260803").symlink_to(outside)
    (crash / "202611260804").mkdir()
    (crash / "202611260804" / "metadata.json").write_bytes(os.urandom(100))
    index = dumps.DumpIndex(SystemRoot(tmp_path))
    assert set(index.scan("/var/crash")) == {"202611260804"}
    for bad in ("../../precious", "202611260803", "random", "nope"):
        with pytest.raises(dumps.DumpNotFoundError):
            index.delete("/var/crash", bad)
    assert outside.is_dir()
    index.delete("/var/crash", "202611260804")
    assert index.scan("/var/crash") == {}


# -- test crash --------------------------------------------------------------------------------


def _dump(name: str, when_us: int, status: str = "complete") -> dumps.DumpInfo:
    return dumps.DumpInfo(name, f"/var/crash/{name}", when_us, "", 1, status, "", "")


def test_evaluate_test() -> None:
    minute = 60_000_000
    pending = CrashTestRecord("t1", 100 * minute + 5_000_000, "boot-1")
    assert evaluate_test(pending, "boot-1", {}).state == "pending"
    assert evaluate_test(pending, "boot-2", {}).state == "failed"
    old = {"a": _dump("a", 99 * minute)}
    assert evaluate_test(pending, "boot-1", old).state == "pending"
    same_minute = {"b": _dump("b", 100 * minute)}
    settled = evaluate_test(pending, "boot-2", same_minute)
    assert (settled.state, settled.dump_id) == ("success", "b")
    partial = {"c": _dump("c", 101 * minute, "incomplete")}
    assert evaluate_test(pending, "boot-2", partial).state == "failed"


def test_test_crash_needs_an_armed_machine(machine: Machine) -> None:
    trigger = Trigger()
    m = manager(machine, trigger=trigger)
    with pytest.raises(NotArmedError):
        m.prepare_test_crash()
    m.arm()
    record = m.prepare_test_crash()
    assert m.last_test()["State"] == "pending" and m.last_test()["Id"] == record.id
    m.crash()
    assert trigger.crashed == 1


# -- config ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"KDUMP_COREDIR": "/var/crash/../../etc"},
        {"NFS": "host:/export/../../etc"},
        {"KDUMP_COREDIR": ["/var"]},
        {"KDUMP_CMDLINE_APPEND": "x" * 5000},
        {f"V{i}": "1" for i in range(65)},
    ],
)
def test_set_config_refusals(machine: Machine, changes: dict[str, object]) -> None:
    before = (machine.root / "etc/default/kdump-tools").read_bytes()
    with pytest.raises(ConfigError):
        manager(machine).set_config(changes)
    assert (machine.root / "etc/default/kdump-tools").read_bytes() == before


def test_set_config_types_and_rearm(machine: Machine) -> None:
    m = manager(machine)
    m.arm()
    m.set_config({"KDUMP_NUM_DUMPS": 2, "KDUMP_DUMP_DMESG": False})
    assert m.get_config()["KDUMP_NUM_DUMPS"] == "2"
    assert m.get_config()["KDUMP_DUMP_DMESG"] == "0"
    assert m.status().armed
    m.set_config({"USE_KDUMP": "0"})
    assert not m.status().armed and m.status().state == "disabled"


# -- systemd path ------------------------------------------------------------------------------


class Units:
    """A UnitControl whose unit fails the way kdump-tools.service would: its arm record says why."""

    def __init__(self, root: Path, ok: bool) -> None:
        self.root, self.ok = root, ok
        self.calls: list[tuple[str, ...]] = []

    def start(self, unit: str) -> bool:
        self.calls.append(("start", unit))
        if self.ok:
            (self.root / "sys/kernel/kexec_crash_loaded").write_text("1\n")
        else:
            record = ArmRecord("load", False, error="NotReservedError", message="no memory")
            record = ArmRecord(**{**record.__dict__, "time": 9e9})
            (self.root / "var/lib/kdump/arm.state").write_text(json.dumps(record.__dict__))
        return self.ok

    def stop(self, unit: str) -> None:
        self.calls.append(("stop", unit))
        (self.root / "sys/kernel/kexec_crash_loaded").write_text("0\n")

    def set_enabled(self, unit: str, enabled: bool) -> None:
        self.calls.append(("enable" if enabled else "disable", unit))


def test_under_systemd_arming_goes_through_the_unit(machine: Machine) -> None:
    units = Units(machine.root, ok=True)
    m = manager(machine, units=units)
    m.arm()
    m.reload()
    m.disarm()
    assert units.calls == [
        ("enable", "kdump-tools.service"),
        ("start", "kdump-tools.service"),
        ("start", "kdump-tools.service"),
        ("disable", "kdump-tools.service"),
        ("stop", "kdump-tools.service"),
    ]


def test_a_failed_unit_reports_the_recorded_error(machine: Machine) -> None:
    with pytest.raises(NotReservedError, match="no memory"):
        manager(machine, units=Units(machine.root, ok=False)).arm()


# -- names and errors --------------------------------------------------------------------------


def test_error_names() -> None:
    assert bus_error(NotReservedError("x")).type == names.Error.NOT_RESERVED
    assert bus_error(ConfigError("x")).type == names.Error.INVALID_CONFIG
    assert bus_error(InteractionRequiredError("x")).type == (
        "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired"
    )
    unexpected = bus_error(ZeroDivisionError("secret path /x/y.py"))
    assert unexpected.type == names.Error.FAILED
    assert "secret" not in unexpected.text and "Traceback" not in unexpected.text


def test_inotify_reports_a_new_entry(tmp_path: Path) -> None:
    ino = Inotify()
    try:
        assert ino.watch(tmp_path / "missing") is None
        assert ino.watch(tmp_path) is not None
        (tmp_path / "202611260802").mkdir()
        events = ino.read()
        assert any(e.name == "202611260802" and e.mask & IN_CREATE for e in events)
    finally:
        ino.close()


def test_parse_events_handles_padding() -> None:
    name = b"abc".ljust(16, b"\0")
    buf = struct.pack("iIII", 1, IN_CREATE, 0, len(name)) + name
    buf += struct.pack("iIII", 2, 0x8000, 0, 0)
    events = parse_events(buf)
    assert [(e.wd, e.name) for e in events] == [(1, "abc"), (2, "")]
