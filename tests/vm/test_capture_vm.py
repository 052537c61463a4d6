"""The capture side in a real capture kernel (qemu TCG, Debian 12's 6.1 kernel).

Each case boots the first kernel with crashkernel=, arms with kdumpd's own ``kdump-config load``
(kexec_file_load), crashes with sysrq-c, and lets the capture kernel run ``kdumpd-capture
savecore`` against the real /proc/vmcore; savecore then reboots (qemu exits).  The host checks
what landed: layout, modes, metadata, dmesg with the panic line, and the dump read back with drgn
(with the kernel's -dbg vmlinux when present: the panicking task's stack; crash too) or, without
it, drgn's raw reads through the kernel's own symbol table.

Timings of each stage inside the capture kernel and the capture process's peak RSS are printed
(``pytest -s``) and kept in the cache's vm/last-<case>.json; they are never asserted.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from . import image, machine
from .nfsd import NfsServer
from .sshd import SshServer

pytestmark = pytest.mark.vm
VMLINUX_DBG = image.TEST_CACHE / "dbg/usr/lib/debug/boot/vmlinux-6.1.0-56-amd64"
PANIC_LINE = "Kernel panic - not syncing: sysrq triggered crash"
STAMP = re.compile(r"\d{12}")
BASE_CONFIG = (
    "USE_KDUMP=1\n"
    "KDUMP_KERNEL=/boot/vmlinuz\n"
    "KDUMP_INITRD=/boot/initrd.img\n"
    'MAKEDUMP_ARGS="-d 31"\n'
)


@pytest.fixture(scope="module")
def guest() -> image.Image:
    return image.build()


@contextmanager
def mounted(disk: Path, where: Path) -> Iterator[Path]:
    """The target disk, read-only, after replaying the journal the forced reboot left."""
    fsck = subprocess.run(["e2fsck", "-fy", str(disk)], capture_output=True, text=True)
    assert fsck.returncode in (0, 1), fsck.stdout  # 1: journal replayed / counters fixed
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-o", "loop,ro", str(disk), str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _uptime(run: machine.Run, tag: str) -> float:
    line = run.line(tag)
    assert line is not None, f"{tag} missing; guest log:\n{run.serial[-4000:]}"
    m = re.search(r"uptime=([\d.]+)", line)
    assert m, line
    return float(m.group(1))


def _report(case: str, run: machine.Run, meta: dict[str, object]) -> None:
    """Print and keep the stage timings measured inside the capture kernel."""
    numbers = {
        "qemu_seconds": round(run.seconds, 1),
        "capture_kernel_memfree_kb_at_start": int(
            re.search(r"memfree_kb=(\d+)", run.line("KDUMPD-VM-CAPTURE-START") or "").group(1)  # type: ignore[union-attr]
        ),
        "boot_to_init": _uptime(run, "KDUMPD-VM-INIT mode=capture"),
        "boot_to_savecore": _uptime(run, "KDUMPD-VM-SAVECORE"),
        "durations": meta.get("durations"),
        "peak_rss_bytes": meta.get("peak_rss_bytes"),
        "sizes": meta.get("sizes"),
        "status": meta.get("status"),
    }
    print(f"\n{case}: {json.dumps(numbers, indent=1)}")
    (image.TEST_CACHE / "vm" / f"last-{case}.json").write_text(json.dumps(numbers, indent=1))


def _check_dump_with_drgn(dump: Path) -> str:
    """What drgn reads from the dump: the crashed thread's stack (with -dbg) or raw memory."""
    script = (
        "import sys, drgn\n"
        "prog = drgn.Program()\n"
        "prog.set_core_dump(sys.argv[1])\n"
        "if len(sys.argv) > 2:\n"
        "    prog.load_debug_info([sys.argv[2]])\n"
        "    print(prog.crashed_thread().stack_trace())\n"
        "else:\n"
        "    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms\n"
        "    prog.register_symbol_finder('kallsyms', load_vmlinux_kallsyms(prog), enable_index=0)\n"
        "    uts = prog.symbol('init_uts_ns').address\n"
        "    print('release', prog.read(uts + 130, 65).split(b'\\0')[0].decode())\n"
        "    print('crashed thread', prog.crashed_thread().tid)\n"
    )
    argv = ["python3", "-c", script, str(dump)]
    if VMLINUX_DBG.exists():
        argv.append(str(VMLINUX_DBG))
    venv_python = image.REPO / ".venv/bin/python"
    argv[0] = str(venv_python) if venv_python.exists() else argv[0]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    if VMLINUX_DBG.exists():
        # the panicking task: sysrq's crash handler under the write to /proc/sysrq-trigger
        assert "sysrq_handle_crash" in done.stdout, done.stdout
        assert "write_sysrq_trigger" in done.stdout, done.stdout
    else:
        assert "release 6.1.0-56-amd64" in done.stdout, done.stdout
    return done.stdout


def _check_dump_with_crash(dump: Path) -> None:
    """Debian's crash (with the -dbg vmlinux) opens the dump: the panic and its stack."""
    done = subprocess.run(
        ["crash", "-s", str(VMLINUX_DBG), str(dump)],
        input="sys\nbt\nquit\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert f'PANIC: "{PANIC_LINE}"' in done.stdout, done.stdout + done.stderr
    assert "sysrq_handle_crash" in done.stdout, done.stdout


def _check_layout(d: Path, complete: bool) -> tuple[str, dict[str, object]]:
    stamp = d.name.rpartition("-")[2]
    assert STAMP.fullmatch(stamp), d.name
    assert _mode(d) == 0o700
    names = sorted(os.listdir(d))
    dump_name = f"dump.{stamp}" if complete else "dump-incomplete"
    assert names == sorted([f"dmesg.{stamp}", dump_name, "metadata.json"]), names
    for n in names:
        assert _mode(d / n) == 0o600, n
    dmesg = (d / f"dmesg.{stamp}").read_text(errors="replace")
    assert PANIC_LINE in dmesg
    meta: dict[str, object] = json.loads((d / "metadata.json").read_text())
    assert meta["in_progress"] is False
    assert meta["kernel_release"] == "6.1.0-56-amd64"
    assert meta["panic_message"] == "sysrq triggered crash"
    assert isinstance(meta["crash_time"], int)
    return stamp, meta


def test_local_target(guest: image.Image, tmp_path: Path) -> None:
    run = machine.boot_cycle(guest, tmp_path / "vm", BASE_CONFIG)
    assert run.line("KDUMPD-VM-ARM rc=0 loaded=1"), run.serial[-4000:]
    assert "kdumpd-capture: rebooting" in run.serial, run.serial[-4000:]
    with mounted(run.target, tmp_path / "mnt") as mnt:
        (d,) = [p for p in mnt.iterdir() if p.name != "lost+found"]
        stamp, meta = _check_layout(d, complete=True)
        assert meta["status"] == "complete" and meta["errors"] == []
        assert meta["format"] == "kdump-compressed"
        _check_dump_with_drgn(d / f"dump.{stamp}")
        if VMLINUX_DBG.exists():
            _check_dump_with_crash(d / f"dump.{stamp}")
    _report("local", run, meta)


def test_target_too_small(guest: image.Image, tmp_path: Path) -> None:
    config = BASE_CONFIG + (
        # a shell command list, as kdump-tools documents it; it replaces the reboot
        'KDUMP_FAIL_CMD="echo KDUMPD-VM-FAILCMD one; echo KDUMPD-VM-FAILCMD two"\n'
    )
    # also the smallest reservation kdump-tools 1.8.1 makes: 128M
    run = machine.boot_cycle(guest, tmp_path / "vm", config, crashkernel="128M", target_mib=24)
    assert "KDUMPD-VM-FAILCMD one" in run.serial and "KDUMPD-VM-FAILCMD two" in run.serial
    # savecore's exit status after the failure: honest
    assert run.line("KDUMPD-VM-SAVECORE-RETURNED rc=1"), run.serial[-4000:]
    with mounted(run.target, tmp_path / "mnt") as mnt:
        (d,) = [p for p in mnt.iterdir() if p.name != "lost+found"]
        _stamp, meta = _check_layout(d, complete=False)
        assert meta["status"] == "incomplete"
        assert any("space budget" in str(e) for e in meta["errors"]), meta["errors"]  # type: ignore[union-attr]
        header = (d / "dump-incomplete").read_bytes()[:464]
        from kdumpd.dumpfile.kdump_format import DiskDumpHeader

        assert DiskDumpHeader.unpack(header).incomplete
    _report("too-small", run, meta)


def test_ssh_and_nfs_targets_in_one_run(guest: image.Image, tmp_path: Path) -> None:
    """SSH and NFS both set: kdump-tools writes both, and so does savecore, in one capture.

    KDUMP_COREDIR is at once the remote directory of the SSH target and the guest's NFS mount
    point (kdump-tools' meaning of the variable), so it names a directory of this test.
    """
    sshd = SshServer(tmp_path / "sshd")
    sshd.base.mkdir()
    nfsd = NfsServer(tmp_path / "nfsd")
    nfsd.base.mkdir()
    remote = tmp_path / "ssh-remote"
    config = BASE_CONFIG + (
        f"SSH=root@10.0.2.2\nSSH_KDUMP_RETRY=5\nKDUMP_COREDIR={remote}\n"
        "NFS=10.0.2.2:/export\nNFS_MOUNT_RETRY=3\n"
    )
    try:
        sshd.start(seen_as="10.0.2.2")  # the host's loopback as qemu's user network shows it
        nfsd.start()
        run = machine.boot_cycle(
            guest,
            tmp_path / "vm",
            config,
            fw_files=sshd.client_files(),
            net=True,
            local_target=False,
        )
    finally:
        sshd.stop()
        nfsd.stop()
    assert "kdumpd-capture: rebooting" in run.serial, run.serial[-4000:]
    # SSH: the flattened stream, which makedumpfile -R turns back into a dump file
    (d,) = list(remote.iterdir())
    assert d.name.startswith("10.0.2.15-"), d.name  # HOSTTAG=ip: the guest's address
    stamp, meta = _check_layout(d, complete=True)
    assert meta["status"] == "complete" and meta["format"] == "flattened"
    rebuilt = tmp_path / "rebuilt"
    with open(d / f"dump.{stamp}", "rb") as stream:
        subprocess.run(
            ["makedumpfile", "-R", str(rebuilt)], stdin=stream, check=True, capture_output=True
        )
    _check_dump_with_drgn(rebuilt)
    _report("ssh", run, meta)
    # NFS: the export mounted on KDUMP_COREDIR with kdump-tools' options, unmounted after
    (n,) = list(nfsd.export.iterdir())
    assert n.name.startswith("10.0.2.15-"), n.name
    stamp, meta = _check_layout(n, complete=True)
    assert meta["status"] == "complete" and meta["target"] == "nfs"
    _check_dump_with_drgn(n / f"dump.{stamp}")
    _report("nfs", run, meta)
