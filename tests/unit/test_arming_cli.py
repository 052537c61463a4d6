"""kdump-config load|unload|reload|try-reload|symlinks|propagate on fake machines (no daemon)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from machines import RELEASE, Machine, build_machine

from kdumpd.arming import missing_default_initrd
from kdumpd.config import load_config
from kdumpd.sshkey import PropagateError, propagate_key
from kdumpd.system import SystemRoot

# The scripts of the venv running the tests (.venv, or .venv-debian for Debian's packaged modules).
BIN = Path(sys.executable).parent


def kdump_config(m: Machine, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KDUMPD_KEXEC_SIMULATE": "1",
        # No daemon: a bus that is not there, so the command acts on the tree itself.
        "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={m.root}/no-bus",
    }
    return subprocess.run(
        [str(BIN / "kdump-config"), "--root", str(m.root), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return build_machine(tmp_path, loaded=False)


def test_load_unload_reload(machine: Machine) -> None:
    loaded = machine.root / "sys/kernel/kexec_crash_loaded"
    done = kdump_config(machine, "load")
    assert (done.returncode, done.stdout, done.stderr) == (0, "loaded kdump kernel\n", "")
    assert loaded.read_text() == "1\n"
    done = kdump_config(machine, "reload")
    assert (done.returncode, done.stdout) == (0, "unloaded kdump kernel\nloaded kdump kernel\n")
    done = kdump_config(machine, "unload")
    assert (done.returncode, done.stdout) == (0, "unloaded kdump kernel\n")
    assert loaded.read_text() == "0\n"


def test_load_repairs_missing_links(machine: Machine) -> None:
    (machine.root / "var/lib/kdump/vmlinuz").unlink()
    done = kdump_config(machine, "load", "--local")
    assert done.returncode == 0, done.stderr
    assert "Creating symlink /var/lib/kdump/vmlinuz." in done.stdout
    assert os.readlink(machine.root / "var/lib/kdump/vmlinuz") == f"/boot/vmlinuz-{RELEASE}"


def test_a_missing_default_initrd_is_the_one_to_build(machine: Machine) -> None:
    root = SystemRoot(machine.root)
    built = f"/var/lib/kdump/initrd.img-{RELEASE}"
    assert missing_default_initrd(root, load_config(root), RELEASE) is None
    (machine.root / built.lstrip("/")).unlink()  # as an install from a chroot leaves it
    assert missing_default_initrd(root, load_config(root), RELEASE) == built
    (machine.root / "var/lib/kdump/initrd.img").unlink(missing_ok=True)
    assert missing_default_initrd(root, load_config(root), RELEASE) == built
    config = machine.root / "etc/default/kdump-tools"
    config.write_text(config.read_text() + "KDUMP_INITRD=/srv/my-initrd\n")
    assert missing_default_initrd(root, load_config(root), RELEASE) is None  # the admin's own
    # Not this machine (--root): nothing is built, the error says what is missing.
    config.write_text(config.read_text().replace("KDUMP_INITRD=/srv/my-initrd\n", ""))
    done = kdump_config(machine, "load", "--local")
    assert done.returncode != 0 and done.stderr.count("\n") == 1, done.stderr
    assert "/var/lib/kdump/initrd.img does not exist" in done.stderr
    assert "building it" not in done.stderr


def test_disabled_config_does_not_load(machine: Machine) -> None:
    config = machine.root / "etc/default/kdump-tools"
    config.write_text(config.read_text().replace("USE_KDUMP=1", "USE_KDUMP=0"))
    done = kdump_config(machine, "load")
    assert done.returncode == 0
    assert "kdump is disabled (USE_KDUMP=0" in done.stderr
    assert (machine.root / "sys/kernel/kexec_crash_loaded").read_text() == "0\n"


def test_not_reserved_is_one_line_and_exit_1(tmp_path: Path) -> None:
    m = build_machine(tmp_path, crash=None, loaded=False)
    done = kdump_config(m, "load")
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "crashkernel=" in done.stderr
    assert "Traceback" not in done.stderr


def test_try_reload_leaves_hotplug_to_the_kernel(machine: Machine) -> None:
    assert kdump_config(machine, "try-reload").stdout == ""  # not loaded: nothing to do
    kdump_config(machine, "load")
    machine.write("/sys/devices/system/cpu/crash_hotplug", "1\n")
    done = kdump_config(machine, "try-reload")
    assert "crash_hotplug=1" in done.stdout and done.returncode == 0


def test_symlinks(machine: Machine) -> None:
    assert kdump_config(machine, "symlinks").returncode == 2
    assert kdump_config(machine, "symlinks", "../../etc").returncode == 2
    missing = kdump_config(machine, "symlinks", "9.9.9")
    assert missing.returncode == 1 and "/boot/vmlinuz-9.9.9 does not exist" in missing.stderr
    machine.sparse("/boot/vmlinuz-6.19.0-1-generic", 1000)
    no_initrd = kdump_config(machine, "symlinks", "6.19.0-1-generic")
    assert no_initrd.returncode == 1 and "initrd.img-6.19.0-1-generic" in no_initrd.stderr
    machine.sparse("/var/lib/kdump/initrd.img-6.19.0-1-generic", 1000)
    done = kdump_config(machine, "symlinks", "6.19.0-1-generic")
    assert done.returncode == 0, done.stderr
    assert os.readlink(machine.root / "var/lib/kdump/vmlinuz") == "/boot/vmlinuz-6.19.0-1-generic"
    kdump_config(machine, "load")
    refused = kdump_config(machine, "symlinks", RELEASE)
    assert refused.returncode == 1 and "unload" in refused.stderr


def test_propagate_needs_ssh(machine: Machine) -> None:
    done = kdump_config(machine, "propagate")
    assert done.returncode == 2 and "SSH is not set" in done.stderr


def test_propagate_makes_a_real_key_and_reports_a_refused_copy(machine: Machine) -> None:
    config = machine.root / "etc/default/kdump-tools"
    config.write_text(config.read_text() + "\nSSH=kdump@127.0.0.1\n")
    root = SystemRoot(machine.root)
    with pytest.raises(PropagateError, match=r"could not copy /root/\.ssh/kdump_id_rsa\.pub"):
        propagate_key(root, load_config(root), batch=True)
    key = machine.root / "root/.ssh/kdump_id_rsa"
    assert key.is_file() and (key.stat().st_mode & 0o777) == 0o600
    assert key.with_suffix(".pub").read_text().startswith("ssh-rsa ")


def test_propagate_derives_a_lost_public_key(machine: Machine) -> None:
    config = machine.root / "etc/default/kdump-tools"
    config.write_text(config.read_text() + "\nSSH=kdump@127.0.0.1\n")
    root = SystemRoot(machine.root)
    with pytest.raises(PropagateError):
        propagate_key(root, load_config(root), batch=True)  # makes the key; the copy is refused
    pub = machine.root / "root/.ssh/kdump_id_rsa.pub"
    original = pub.read_text().split()[:2]
    pub.unlink()
    with pytest.raises(PropagateError, match=r"could not copy /root/\.ssh/kdump_id_rsa\.pub"):
        propagate_key(root, load_config(root), batch=True)
    assert pub.read_text().split()[:2] == original


def test_propagate_argument_lists(machine: Machine) -> None:
    config = machine.root / "etc/default/kdump-tools"
    config.write_text(config.read_text() + "\nSSH=kdump@backup.example\n")
    calls: list[list[str]] = []

    def runner(argv: object) -> tuple[int, str]:
        calls.append(list(argv))  # type: ignore[call-overload]
        # This fake ssh-keygen writes no files, so the public key is derived next.
        return 0, "ssh-rsa AAAAB3NzaC1yc2E test" if calls[-1][1] == "-y" else ""

    root = SystemRoot(machine.root)
    done = propagate_key(root, load_config(root), runner=runner)
    key = str(machine.root / "root/.ssh/kdump_id_rsa")
    assert calls == [
        ["ssh-keygen", "-q", "-t", "rsa", "-N", "", "-f", key],
        ["ssh-keygen", "-y", "-f", key],
        ["ssh-copy-id", "-i", f"{key}.pub", "kdump@backup.example"],
    ]
    assert done.messages()[-1] == (
        "propagated ssh key /root/.ssh/kdump_id_rsa to server kdump@backup.example"
    )
