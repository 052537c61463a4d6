"""Target logic: ssh command lines and retries, NFS mount and retries, HOSTTAG, the systemd
generator's drop-in, KDUMP_FAIL_CMD.  The ssh and mount runners here record argv and answer
with scripted statuses (the real ssh and sshd run in tests/vm/test_savecore_host.py)."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest

from kdumpd.config import NfsTarget, SshTarget, parse_config
from kdumpd.savecore import after, generator, hosttag, nfs
from kdumpd.savecore.space import SpaceError
from kdumpd.savecore.ssh import (
    SSH_UNREACHABLE,
    SshDumpTarget,
    SshResult,
    SshTargetError,
    ssh_argv,
)

WHEN = 1795680150.0  # 2026-11-26 ~08:02 UTC


class Script:
    """Answers runner calls in order, as (status, stderr[, stdout]), and records them."""

    def __init__(self, *answers: tuple[int, str] | tuple[int, str, str]) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], data: bytes | None = None) -> SshResult:
        self.calls.append(argv)
        return SshResult(*self.answers.pop(0)) if self.answers else SshResult(0, "")


def test_ssh_argv_fixed_options_and_quoted_remote_words() -> None:
    argv = ssh_argv(
        SshTarget("kdump", "backup.example"),
        "/root/.ssh/kdump_id_rsa",
        ["umask 077", ["mkdir", "-p", "--", "/srv/crash dir/$(reboot)"]],
    )
    assert argv[:3] == ["ssh", "-i", "/root/.ssh/kdump_id_rsa"]
    assert "BatchMode=yes" in argv and "StrictHostKeyChecking=yes" in argv
    assert argv[-2] == "kdump@backup.example"
    # the remote shell sees the path as one quoted word, never as a command substitution
    assert shlex.split(argv[-1]) == [
        "umask",
        "077",
        "&&",
        "mkdir",
        "-p",
        "--",
        "/srv/crash dir/$(reboot)",
    ]


def _target(runner: Script, attempts: int = 3) -> tuple[SshDumpTarget, list[float]]:
    sleeps: list[float] = []
    t = SshDumpTarget(
        SshTarget("root", "10.0.2.2"),
        "/root/.ssh/kdump_id_rsa",
        "/var/crash",
        "10.0.2.15",
        attempts,
        runner=runner,
        sleep=sleeps.append,
    )
    return t, sleeps


def test_ssh_prepare_retries_while_unreachable_then_takes_a_free_name() -> None:
    runner = Script(
        (SSH_UNREACHABLE, "connect: no route"),  # mkdir -p coredir: network not up yet
        (0, ""),
        (1, ""),  # 10.0.2.15-<minute> exists: next minute
        (0, ""),
    )
    t, sleeps = _target(runner)
    t.prepare(WHEN)
    assert sleeps == [3.0]
    first, second = runner.calls[2][-1], runner.calls[3][-1]
    assert t.dir_id == f"10.0.2.15-{t.stamp}" and t.dir_id in second and t.dir_id not in first
    assert "mkdir -m 700" in second


def test_ssh_gives_up_after_the_configured_attempts() -> None:
    runner = Script(*[(SSH_UNREACHABLE, "Connection refused")] * 5)
    t, sleeps = _target(runner, attempts=2)
    with pytest.raises(SshTargetError, match="unreachable after 2 attempts: Connection refused"):
        t.prepare(WHEN)
    assert len(runner.calls) == 2 and sleeps == [3.0]


def test_ssh_remote_failure_is_not_retried() -> None:
    runner = Script((1, "mkdir: cannot create directory: Permission denied"))
    t, _ = _target(runner)
    with pytest.raises(SshTargetError, match="Permission denied"):
        t.prepare(WHEN)
    assert len(runner.calls) == 1


DF_OUT = """Filesystem     1024-blocks    Used Available Capacity Mounted on
/dev/sdb1        102400000 1000000 101400000       1% /srv/crash dumps
"""


def test_ssh_space_comes_from_the_remote_df_of_the_dump_directory() -> None:
    runner = Script((0, ""), (0, ""), (0, "", DF_OUT))
    t, _ = _target(runner)
    t.prepare(WHEN)
    plan = t.space()
    assert shlex.split(runner.calls[2][-1]) == ["df", "-P", "-k", "--", str(t.directory)]
    assert plan.free == 101400000 * 1024
    assert plan.reserve == 1024 << 20  # 2 % of 97.7 GiB, capped at 1 GiB
    assert plan.budget == plan.free - plan.reserve


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ((127, "sh: df: not found"), "cannot read free space: sh: df: not found"),
        ((0, "", "df: unexpected\n"), "unexpected df output"),
    ],
)
def test_ssh_space_unknown_is_a_space_error(
    answer: tuple[int, str] | tuple[int, str, str], message: str
) -> None:
    t, _ = _target(Script((0, ""), (0, ""), answer))
    t.prepare(WHEN)
    with pytest.raises(SpaceError, match=message):
        t.space()


def test_nfs_mount_is_kdump_tools_command_retried_then_unmounted(tmp_path: Path) -> None:
    calls: list[list[str]] = []
    answers = [(32, "mount.nfs: Connection refused"), (0, ""), (0, "")]

    def runner(argv: list[str]) -> tuple[int, str]:
        calls.append(argv)
        return answers.pop(0)

    sleeps: list[float] = []
    target = NfsTarget("nfs.example", "/exports/crash")
    with nfs.mounted(
        target,
        tmp_path / "crash",
        timeo=600,
        retrans=3,
        attempts=4,
        runner=runner,
        sleep=sleeps.append,
        log=lambda _m: None,
    ) as where:
        assert where == tmp_path / "crash"
    mount = [
        "mount",
        "-t",
        "nfs",
        "-o",
        "nolock,tcp,soft,timeo=600,retrans=3",
        "nfs.example:/exports/crash",
        str(tmp_path / "crash"),
    ]
    assert calls == [mount, mount, ["umount", str(tmp_path / "crash")]]
    assert sleeps == [3.0]


def test_nfs_mount_failure_after_all_attempts(tmp_path: Path) -> None:
    def runner(argv: list[str]) -> tuple[int, str]:
        return 32, "mount.nfs: No route to host"

    mount = nfs.mounted(
        NfsTarget("h", "/x"),
        tmp_path / "m",
        timeo=1,
        retrans=1,
        attempts=2,
        runner=runner,
        sleep=lambda _s: None,
        log=lambda _m: None,
    )
    with pytest.raises(nfs.NfsMountError, match=r"failed 2 times: mount\.nfs: No route to host"):
        mount.__enter__()


def test_hosttag_ip_waits_for_an_address_then_falls_back_to_the_hostname() -> None:
    found = iter([[], [], ["10.0.2.15", "192.168.1.2"]])
    sleeps: list[float] = []
    assert hosttag.host_tag("ip", lambda: next(found), lambda: "h", sleeps.append) == "10.0.2.15"
    assert sleeps == [1.0, 1.0]
    assert hosttag.host_tag("ip", lambda: [], lambda: "h", lambda _s: None) == "h"
    assert hosttag.host_tag("hostname", lambda: ["10.0.0.1"], lambda: "h") == "h"


def test_this_hosts_addresses_exclude_loopback() -> None:
    assert "127.0.0.1" not in hosttag.ipv4_addresses()


@pytest.mark.parametrize(
    ("config", "want", "unwanted"),
    [
        ("", "RequiresMountsFor=/var/crash\n", "network-online"),
        ("KDUMP_COREDIR=/srv/dumps\n", "RequiresMountsFor=/srv/dumps\n", "network-online"),
        ("SSH=kdump@backup\n", "After=network-online.target\n", "RequiresMountsFor"),
        ("NFS=nfs:/export\n", "Wants=network-online.target\n", "RequiresMountsFor"),
    ],
)
def test_generator_drop_in_per_target(config: str, want: str, unwanted: str) -> None:
    text = generator.drop_in(parse_config(config))
    assert want in text and unwanted not in text


def test_generator_writes_only_in_a_capture_boot(tmp_path: Path) -> None:
    from kdumpd.system import SystemRoot

    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    out = tmp_path / "gen"
    generator.generate(SystemRoot(root), out)
    assert not out.exists()
    (root / "proc/vmcore").write_bytes(b"\x7fELF")
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/kdump-tools").write_text("SSH=not a target\n")  # broken: broadest
    generator.generate(SystemRoot(root), out)
    text = (out / "kdump-tools-dump.service.d" / generator.DROP_IN).read_text()
    assert "RequiresMountsFor=/var/crash" in text and "After=network-online.target" in text


def test_fail_cmd_runs_as_the_documented_shell_command(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # kdump-tools' documented example style: a command list, which only a shell can run
    status = after.run_fail_command(f"echo one > {out}; echo two >> {out}; exit 3")
    assert status == 3
    assert out.read_text() == "one\ntwo\n"
    assert after.fail_command_argv("x") == ["/bin/sh", "-c", "x"]


def test_power_is_left_to_systemd_when_it_runs(tmp_path: Path) -> None:
    from kdumpd.system import SystemRoot

    assert isinstance(after.power_for(SystemRoot(tmp_path)), after.KernelPower)
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    assert after.power_for(SystemRoot(tmp_path)) is None


def test_unit_passes_systemd_analyze_verify(repo: Path, tmp_path: Path) -> None:
    unit = (repo / "units/kdump-tools-dump.service").read_text()
    settings = [line for line in unit.splitlines() if line and not line.startswith("#")]
    assert "DefaultDependencies=no" in settings
    assert not [line for line in settings if "sysinit.target" in line or "network" in line]
    # installed paths pointed at this checkout, as the package would install them
    copy = tmp_path / "kdump-tools-dump.service"
    copy.write_text(unit.replace("/usr/sbin/", f"{repo}/.venv/bin/"))
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(copy)], capture_output=True, text=True
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_makedump_args_read_with_makedumpfiles_letters() -> None:
    from kdumpd.errors import ConfigError
    from kdumpd.savecore.engine import capture_options

    opts = capture_options(("-F", "-c", "-d", "31"), "/etc/default/kdump-tools")
    assert (opts.dump_level, opts.compression, opts.elf) == (31, "zlib", False)
    assert capture_options((), "x").compression == "zstd"  # kdumpd's default
    assert capture_options(("-l", "-d", "1"), "x").compression == "lzo"
    with pytest.raises(ConfigError, match="/etc/default/kdump-tools: MAKEDUMP_ARGS"):
        capture_options(("--no-such-option",), "/etc/default/kdump-tools")
