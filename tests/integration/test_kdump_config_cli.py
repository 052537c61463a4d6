"""The installed ``kdump-config`` console script, run as a user would, on fake roots and on /."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kdumpd.cli.kdump_config import COMMANDS, Command, NotAvailableError, resolve
from tests.unit.machines import BASE_CMDLINE, build_machine

SCRIPT = Path(sys.executable).parent / "kdump-config"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("KDUMPD_ROOT", "KDUMPD_DEBUG")}
    full_env.update(env or {})
    return subprocess.run(
        [str(SCRIPT), *args], capture_output=True, text=True, env=full_env, timeout=60
    )


def test_show_status_test_json_on_a_fake_machine(tmp_path: Path) -> None:
    build_machine(tmp_path)
    shown = run("--root", str(tmp_path), "show")
    assert (shown.returncode, shown.stderr) == (0, "")
    assert "current state:    ready to kdump\n" in shown.stdout
    assert "crashkernel reserved: 0x0000000060000000 - 0x0000000074000000 (320 MB)\n" in (
        shown.stdout
    )
    status = run("status", env={"KDUMPD_ROOT": str(tmp_path)})  # the environment variable
    assert (status.returncode, status.stdout) == (0, "current state   : ready to kdump\n")
    data = json.loads(run("show", "--json", "--root", str(tmp_path)).stdout)
    assert data["state"] == "ready"
    assert data["crashkernel"]["reserved_bytes"] == 320 << 20
    assert data["suggested"]["text"] == "441M"
    assert data["config"]["USE_KDUMP"] == "1"
    dry = run("--root", str(tmp_path), "test")
    assert dry.returncode == 0
    assert dry.stdout.splitlines()[8:10] == [
        "kexec command to be used:",
        '  /sbin/kexec -p --command-line="BOOT_IMAGE=/vmlinuz-6.18.0-8-generic root=UUID=0a86b691'
        " ro console=tty1 console=ttyS0 reset_devices systemd.unit=kdump-tools-dump.service"
        ' nr_cpus=1 irqpoll usbcore.nousb panic=10" --initrd=/var/lib/kdump/initrd.img'
        " /var/lib/kdump/vmlinuz",
    ]


def test_not_ready_exits_3_with_problems_as_json(tmp_path: Path) -> None:
    build_machine(tmp_path, cmdline=BASE_CMDLINE, crash=None, loaded=False)
    status = run("--root", str(tmp_path), "status", "--json")
    assert status.returncode == 3
    data = json.loads(status.stdout)
    assert data["state"] == "not-ready"
    assert [p["code"] for p in data["problems"]] == ["crashkernel-missing", "not-loaded"]


@pytest.mark.parametrize(
    ("config", "stderr"),
    [
        (
            "USE_KDUMP=maybe\n",
            "kdump-config: /etc/default/kdump-tools:1: USE_KDUMP: expected 0 or 1",
        ),
        ('\nSSH="root@host; reboot"\n', "kdump-config: /etc/default/kdump-tools:2: SSH: shell"),
        ("KDUMP_KERNEL=$(uname -r)\n", "kdump-config: /etc/default/kdump-tools:1: KDUMP_KERNEL:"),
    ],
)
def test_bad_config_is_one_line_exit_2(tmp_path: Path, config: str, stderr: str) -> None:
    build_machine(tmp_path, config=config)
    for command in ("show", "status", "test"):
        done = run("--root", str(tmp_path), command)
        assert done.returncode == 2
        assert done.stderr.startswith(stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert done.stdout == ""


def test_usage_errors(tmp_path: Path) -> None:
    assert run().returncode == 2
    unknown = run("frobnicate")
    assert unknown.returncode == 2
    assert unknown.stderr.startswith("kdump-config: unknown command 'frobnicate'")
    missing = run("--root", str(tmp_path / "nope"), "show")
    assert (missing.returncode, missing.stderr) == (
        2,
        f"kdump-config: --root {tmp_path / 'nope'}: not a directory\n",
    )
    helped = run("help")
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: kdump-config [--root DIR] [--json] {help|test|show|")
    assert run("show", "extra", "--root", str(tmp_path)).returncode == 2


def test_unbuilt_subcommand_says_so() -> None:
    with pytest.raises(NotAvailableError, match="x: not available yet in this kdumpd build"):
        resolve(Command("x", "kdumpd.cli.not_there:x", ""))
    with pytest.raises(NotAvailableError):
        resolve(Command("y", "kdumpd.cli.kdump_config:not_there", ""))
    assert {c.name for c in COMMANDS} >= {"load", "unload", "reload", "propagate", "savecore"}


def _cmdline() -> str:
    return Path("/proc/cmdline").read_text()


@pytest.mark.skipif("crashkernel=" in _cmdline(), reason="this machine boots with crashkernel=")
def test_this_machine_without_crashkernel_is_not_ready() -> None:
    status = run("status")
    assert status.returncode == 3, status.stderr
    assert status.stdout.startswith("current state   : Not ready to kdump\n")
    assert (
        "  - crashkernel-missing: crashkernel= is not on the kernel command line" in status.stdout
    )
    shown = run("show")
    assert shown.returncode == 0, shown.stderr
    assert "current state:    Not ready to kdump" in shown.stdout
    assert "crashkernel-missing" in shown.stdout
