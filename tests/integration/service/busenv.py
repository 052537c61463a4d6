"""A private system-type bus with kdumpd's policy, the real polkitd, kdumpd, and CLI clients.

polkitd runs in a private mount namespace (``unshare -m``) where our action file and a test rule
are bind-mounted over ``/usr/share/polkit-1/actions`` and ``/etc/polkit-1/rules.d``: the host's
polkit files are never touched. The rule authorizes the ``daemon`` user (uid 1) for kdumpd's
actions, so one test user is allowed by polkit and ``nobody`` is refused by it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
# The scripts of the venv running the tests (.venv, or .venv-debian for Debian's packaged modules).
BIN = Path(sys.executable).parent
BUS_NAME = "org.kdumpd.Kdump1"
PATH = "/org/kdumpd/Kdump1"
MANAGER = "org.kdumpd.Kdump1.Manager"
DUMP = "org.kdumpd.Kdump1.Dump"
ALLOWED_USER = "daemon"

BUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <!-- Debian's system.conf default context: deny owning and calling unless a policy allows. -->
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <include>{repo}/dbus/org.kdumpd.Kdump1.conf</include>
  <include>/usr/share/dbus-1/system.d/org.freedesktop.PolicyKit1.conf</include>
</busconfig>
"""

POLKIT_RULE = f"""polkit.addRule(function(action, subject) {{
    if (action.id.indexOf("org.kdumpd.kdump1.") == 0 && subject.user == "{ALLOWED_USER}")
        return polkit.Result.YES;
}});
"""


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Bus:
    """A private system bus; ``address`` is what DBUS_SYSTEM_BUS_ADDRESS gets."""

    directory: Path
    address: str = ""
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.address, **extra}

    def run(
        self, argv: list[str], user: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        if user:
            argv = ["runuser", "-u", user, "--", *argv]
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=self.env(), check=False
        )

    def busctl(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.run(["busctl", f"--address={self.address}", *args], user)

    def busctl_json(self, *args: str, user: str | None = None) -> Any:
        done = self.busctl("--json=short", *args, user=user)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def prop(self, name: str, path: str = PATH, iface: str = MANAGER) -> Any:
        return self.busctl_json("get-property", BUS_NAME, path, iface, name)["data"]

    def gdbus_call(
        self, method: str, *args: str, path: str = PATH, user: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``gdbus call`` (its errors carry the D-Bus error name: GDBus.Error:<name>: …)."""
        argv = ["gdbus", "call", "--address", self.address, "--dest", BUS_NAME]
        return self.run([*argv, "--object-path", path, "--method", method, *args], user)

    def name_owner(self, name: str) -> bool:
        done = self.busctl(
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "NameHasOwner",
            "s",
            name,
        )
        return done.stdout.strip() == "b true"

    def connections(self) -> int:
        names = self.busctl_json(
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "ListNames",
        )["data"][0]
        return sum(1 for n in names if n.startswith(":"))

    @contextmanager
    def monitor(self) -> Iterator[Callable[[], str]]:
        """``gdbus monitor`` on kdumpd's signals; yields a function returning the output so far."""
        out = self.directory / f"monitor-{time.monotonic_ns()}.txt"
        with out.open("w") as sink:
            proc = subprocess.Popen(
                ["gdbus", "monitor", "--address", self.address, "--dest", BUS_NAME],
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=self.env(),
            )
            try:
                wait_until(lambda: "is owned by" in out.read_text(), what="gdbus monitor")
                yield out.read_text
            finally:
                _stop(proc)

    def close(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)


def start_bus(polkit: bool = True) -> Bus:
    """dbus-daemon with the policy above, and polkitd (unless told not to); socket readable by
    every user."""
    directory = Path(tempfile.mkdtemp(prefix="kdumpd-bus-"))
    directory.chmod(0o755)
    bus = Bus(directory)
    conf = directory / "bus.conf"
    conf.write_text(BUS_CONF.format(socket=directory / "bus", repo=REPO))
    daemon = subprocess.Popen(
        ["dbus-daemon", f"--config-file={conf}", "--nofork", "--print-address=1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    bus.procs.append(daemon)
    assert daemon.stdout is not None
    bus.address = daemon.stdout.readline().strip()
    try:
        if polkit:
            _start_polkitd(bus)
    except BaseException:
        bus.close()
        raise
    return bus


def _start_polkitd(bus: Bus) -> None:
    actions, rules = bus.directory / "actions", bus.directory / "rules"
    shutil.copytree("/usr/share/polkit-1/actions", actions)
    shutil.copy(REPO / "dbus" / "org.kdumpd.kdump1.policy", actions)
    rules.mkdir()
    (rules / "50-kdumpd-test.rules").write_text(POLKIT_RULE)
    for p in [actions, rules, *actions.iterdir(), *rules.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    script = (
        f"mount --bind {actions} /usr/share/polkit-1/actions && "
        f"mount --bind {rules} /etc/polkit-1/rules.d && "
        "exec /usr/lib/polkit-1/polkitd --no-debug"
    )
    log = (bus.directory / "polkitd.log").open("w")
    bus.procs.append(
        subprocess.Popen(
            ["unshare", "-m", "sh", "-c", script],
            env=bus.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    )
    wait_until(lambda: bus.name_owner("org.freedesktop.PolicyKit1"), what="polkitd on the bus")


def start_kdumpd(bus: Bus, root: Path, prefix: Sequence[str] = ()) -> subprocess.Popen[Any]:
    """The real daemon (BIN/kdumpd) on a fake machine; its kernel simulated (see kexec).
    ``prefix`` is a command that execs the daemon (e.g. in a private mount namespace)."""
    log = (bus.directory / f"kdumpd-{root.name}.log").open("w")
    proc = subprocess.Popen(
        [*prefix, str(BIN / "kdumpd"), "--root", str(root)],
        env=bus.env(KDUMPD_KEXEC_SIMULATE="1"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: bus.name_owner(BUS_NAME) or proc.poll() is not None, what="kdumpd")
    except AssertionError:
        _stop(proc)
        raise
    assert proc.poll() is None, (bus.directory / f"kdumpd-{root.name}.log").read_text()
    return proc
