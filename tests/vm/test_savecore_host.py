"""``kdumpd-capture savecore`` on this host, against the genuine fixture /proc/vmcore (--root).

The same command the capture kernel runs (tests/vm/test_capture_vm.py proves it there), with
real targets: a local directory, a tmpfs too small for the dump, and a real sshd on loopback.
Every dump is read back with libkdumpfile (makedumpfile -R first for the flattened SSH stream).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kdumpd.dumpfile.kdump_format import DiskDumpHeader

from .conftest import machine_root
from .sshd import SshServer, run_with_ssh_dir

pytestmark = pytest.mark.vmcore
SAVECORE = [sys.executable, "-m", "kdumpd.cli.capture", "savecore", "--no-reboot"]
REPO = Path(__file__).resolve().parents[2]
STAMP = re.compile(r"\d{12}")


def _savecore(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SAVECORE, "--root", str(root)], capture_output=True, text=True, cwd=REPO, timeout=300
    )


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _release(dump: Path) -> str:
    import kdumpfile

    k = kdumpfile.kdumpfile(str(dump))
    return str(k.attr["linux.uts.release"])


def _check_dir(d: Path, stamp: str, dmesg_ref: bytes) -> dict[str, object]:
    assert _mode(d) == 0o700
    names = sorted(os.listdir(d))
    assert names == [f"dmesg.{stamp}", f"dump.{stamp}", "metadata.json"], names
    for n in names:
        assert _mode(d / n) == 0o600, n
    assert (d / f"dmesg.{stamp}").read_bytes() == dmesg_ref
    meta: dict[str, object] = json.loads((d / "metadata.json").read_text())
    assert meta["status"] == "complete" and meta["in_progress"] is False
    assert meta["errors"] == []
    assert meta["kernel_release"] == "6.1.0-56-amd64"
    assert meta["panic_message"] == "sysrq triggered crash"
    assert meta["dump_level"] == 31
    assert meta["id"] == d.name
    return meta


def test_local_target_layout_metadata_and_retention(
    tmp_path: Path, fixture_vmcore: Path, shared_fixtures: Path
) -> None:
    root = machine_root(
        tmp_path, fixture_vmcore, 'USE_KDUMP=1\nMAKEDUMP_ARGS="-F -c -d 31"\nKDUMP_NUM_DUMPS=2\n'
    )
    crash = root / "var/crash"
    for old in ("202001010000", "202001020000", "not-a-dump"):
        (crash / old).mkdir(parents=True)
    done = _savecore(root)
    assert done.returncode == 0, done.stdout + done.stderr
    new = [n for n in os.listdir(crash) if STAMP.fullmatch(n) and not n.startswith("2020")]
    assert len(new) == 1, os.listdir(crash)
    meta = _check_dir(
        crash / new[0], new[0], (shared_fixtures / "vmcore-6.1-kexec.dmesg.txt").read_bytes()
    )
    # -F in MAKEDUMP_ARGS does not flatten a local dump; -c (zlib) is honoured
    assert meta["format"] == "kdump-compressed" and meta["compression"] == "zlib"
    dump = crash / new[0] / f"dump.{new[0]}"
    assert _release(dump) == "6.1.0-56-amd64"
    sizes = meta["sizes"]
    assert isinstance(sizes, dict) and sizes["dump"] == dump.stat().st_size
    # the daemon's dump index reads the directory as this capture describes it
    from kdumpd.service.dumps import read_dump_dir

    info = read_dump_dir(crash / new[0], f"/var/crash/{new[0]}")
    assert info is not None
    assert (info.status, info.kernel_release, info.format) == (
        "complete",
        "6.1.0-56-amd64",
        "kdump-compressed",
    )
    assert info.panic_message == "sysrq triggered crash"
    assert info.timestamp_us == meta["timestamp_us"]
    # KDUMP_NUM_DUMPS=2: the oldest dump went, the other and the junk directory stay
    assert sorted(os.listdir(crash)) == sorted(["202001020000", "not-a-dump", new[0]])


@pytest.fixture
def small_root(tmp_path: Path, fixture_vmcore: Path) -> Iterator[Path]:
    """A machine whose /var/crash is a 20 MiB file system (tmpfs): too small for the dump."""
    root = machine_root(tmp_path, fixture_vmcore, 'USE_KDUMP=1\nMAKEDUMP_ARGS="-d 31"\n')
    crash = root / "var/crash"
    crash.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "kdumpd-test", str(crash)], check=True
    )
    yield root
    subprocess.run(["umount", str(crash)], check=True)


def test_target_too_small_keeps_dmesg_and_marks_the_dump_incomplete(small_root: Path) -> None:
    done = _savecore(small_root)
    # the dump does not fit: an honest failure, and the disk is never filled
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAILED" in done.stdout
    crash = small_root / "var/crash"
    (d,) = list(crash.iterdir())
    stamp = d.name
    assert sorted(os.listdir(d)) == [f"dmesg.{stamp}", "dump-incomplete", "metadata.json"]
    meta = json.loads((d / "metadata.json").read_text())
    assert meta["status"] == "incomplete" and meta["in_progress"] is False
    assert any("space budget" in e for e in meta["errors"]), meta["errors"]
    assert meta["sizes"]["estimate"] > meta["sizes"]["budget"]
    header = DiskDumpHeader.unpack((d / "dump-incomplete").read_bytes()[:464])
    assert header.incomplete
    st = os.statvfs(crash)
    assert st.f_bavail * st.f_frsize >= 15 << 20  # the 16 MiB reserve, less the metadata


def test_ssh_target_against_a_real_sshd(
    tmp_path: Path, fixture_vmcore: Path, shared_fixtures: Path, sshd: SshServer
) -> None:
    remote = tmp_path / "remote-crash"
    root = machine_root(
        tmp_path,
        fixture_vmcore,
        "USE_KDUMP=1\nSSH=root@127.0.0.1\nHOSTTAG=hostname\nSSH_KDUMP_RETRY=2\n"
        f'KDUMP_COREDIR={remote}\nMAKEDUMP_ARGS="-d 31"\n',
    )
    done = run_with_ssh_dir(
        sshd.client_dir, [*SAVECORE, "--root", str(root)], cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (d,) = list(remote.iterdir())
    host, _, stamp = d.name.rpartition("-")
    assert host == os.uname().nodename and STAMP.fullmatch(stamp)
    meta = _check_dir(d, stamp, (shared_fixtures / "vmcore-6.1-kexec.dmesg.txt").read_bytes())
    assert meta["format"] == "flattened" and meta["target"] == "ssh"
    # the stream is makedumpfile's flattened format: makedumpfile -R rebuilds the dump
    rebuilt = tmp_path / "rebuilt"
    with open(d / f"dump.{stamp}", "rb") as stream:
        subprocess.run(
            ["makedumpfile", "-R", str(rebuilt)], stdin=stream, check=True, capture_output=True
        )
    assert _release(rebuilt) == "6.1.0-56-amd64"


def test_ssh_target_too_small_stops_the_stream_at_the_budget(
    tmp_path: Path, fixture_vmcore: Path, sshd: SshServer
) -> None:
    remote = tmp_path / "remote-crash"
    remote.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m", "kdumpd-test", str(remote)], check=True
    )
    try:
        root = machine_root(
            tmp_path,
            fixture_vmcore,
            f'USE_KDUMP=1\nSSH=root@127.0.0.1\nKDUMP_COREDIR={remote}\nMAKEDUMP_ARGS="-d 31"\n',
        )
        done = run_with_ssh_dir(
            sshd.client_dir, [*SAVECORE, "--root", str(root)], cwd=REPO, timeout=300
        )
        assert done.returncode == 1, done.stdout + done.stderr
        assert "it will stop there, marked incomplete" in done.stdout, done.stdout
        (d,) = list(remote.iterdir())
        assert "dump-incomplete" in os.listdir(d)
        meta = json.loads((d / "metadata.json").read_text())
        assert meta["status"] == "incomplete"
        assert any("space budget" in e for e in meta["errors"]), meta["errors"]
        assert (d / "dump-incomplete").stat().st_size <= meta["sizes"]["budget"]
        st = os.statvfs(remote)
        assert st.f_bavail * st.f_frsize >= 15 << 20  # the 16 MiB reserve, less the metadata
    finally:
        subprocess.run(["umount", str(remote)], check=True)


def test_ssh_target_unreachable_fails_after_bounded_retries(
    tmp_path: Path, fixture_vmcore: Path, sshd: SshServer
) -> None:
    sshd.stop()  # nothing listens on its port any more
    root = machine_root(
        tmp_path,
        fixture_vmcore,
        f"USE_KDUMP=1\nSSH=root@127.0.0.1\nSSH_KDUMP_RETRY=2\nKDUMP_COREDIR={tmp_path}/r\n",
    )
    done = run_with_ssh_dir(
        sshd.client_dir, [*SAVECORE, "--root", str(root)], cwd=REPO, timeout=120
    )
    assert done.returncode == 1
    assert "unreachable after 2 attempts" in done.stdout, done.stdout
    assert "FAILED" in done.stdout


def test_kdump_config_savecore_honours_use_kdump(tmp_path: Path, fixture_vmcore: Path) -> None:
    root = machine_root(tmp_path, fixture_vmcore, "USE_KDUMP=0\n")
    done = subprocess.run(
        [sys.executable, "-m", "kdumpd.cli.kdump_config", "--root", str(root), "savecore"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "USE_KDUMP is 0: not saving the dump" in done.stdout
    assert not (root / "var/crash").exists()


def test_a_broken_config_still_saves_the_dump_and_says_so(
    tmp_path: Path, fixture_vmcore: Path
) -> None:
    root = machine_root(tmp_path, fixture_vmcore, "USE_KDUMP=1\nSSH=root@host; reboot\n")
    done = _savecore(root)
    assert done.returncode == 1, done.stdout + done.stderr  # the config error is reported
    assert "saving with the default settings" in done.stdout
    (d,) = list((root / "var/crash").iterdir())
    assert (d / f"dump.{d.name}").exists()  # ... and the dump was saved all the same


def test_outside_a_capture_kernel_it_refuses_and_never_reboots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/kdump-tools").write_text('USE_KDUMP=1\nKDUMP_FAIL_CMD="true"\n')
    # without --no-reboot: the refusal comes before KDUMP_FAIL_CMD or the reboot could run.
    # KDUMP_FAIL_CMD is set so that even a regression here runs it instead of rebooting the host.
    done = subprocess.run(
        [sys.executable, "-m", "kdumpd.cli.capture", "savecore", "--root", str(root)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert done.returncode == 1
    assert "/proc/vmcore is missing or empty: not a capture kernel" in done.stderr
    assert "KDUMP_FAIL_CMD" not in done.stdout and "reboot" not in done.stdout
