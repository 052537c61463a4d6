"""Arming on a fake machine: checks, flags, errno messages, fallback, lock, panic_on_oops."""

from __future__ import annotations

import errno
import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from kdumpd import arming, kexec
from kdumpd.arming import Arming, ArmPlan
from kdumpd.kexec import (
    KEXEC_FILE_NO_INITRAMFS,
    KEXEC_FILE_ON_CRASH,
    BusyError,
    KexecFailedError,
    KexecUnavailableError,
    LinuxKexec,
    LoadContext,
    NotReservedError,
)
from kdumpd.system import SystemRoot


class FakeKernel:
    """A KexecPort that records calls and fails with a chosen errno."""

    def __init__(self, root: Path, fail: int | None = None) -> None:
        self.root = root
        self.fail = fail
        self.loads: list[tuple[Path, Path | None, str, int]] = []
        self.unloads = 0
        self.argvs: list[list[str]] = []
        self.kexec_result: tuple[int, str] = (0, "")

    def file_load(self, kernel: Path, initrd: Path | None, cmdline: str, flags: int) -> None:
        self.loads.append((kernel, initrd, cmdline, flags))
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        (self.root / "sys/kernel/kexec_crash_loaded").write_text("1\n")

    def file_unload(self) -> None:
        self.unloads += 1
        if self.fail is not None:
            raise OSError(self.fail, os.strerror(self.fail))
        (self.root / "sys/kernel/kexec_crash_loaded").write_text("0\n")

    def run_kexec(self, argv: Sequence[str]) -> tuple[int, str]:
        self.argvs.append(list(argv))
        return self.kexec_result


@pytest.fixture
def machine(tmp_path: Path) -> Path:
    for rel, text in {
        "sys/kernel/kexec_crash_size": "201326592\n",
        "sys/kernel/kexec_crash_loaded": "0\n",
        "proc/sys/kernel/panic_on_oops": "0\n",
        "var/lib/kdump/vmlinuz": "k" * 1000,
        "var/lib/kdump/initrd.img": "i" * 500,
    }.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    return tmp_path


PLAN = ArmPlan("/var/lib/kdump/vmlinuz", "/var/lib/kdump/initrd.img", "root=/dev/vda ro")


def record(root: Path) -> dict[str, object]:
    data = json.loads((root / "var/lib/kdump/arm.state").read_text())
    assert isinstance(data, dict)
    return data


def test_load_uses_file_load_on_crash_and_sets_panic_on_oops(machine: Path) -> None:
    port = FakeKernel(machine)
    result = Arming(SystemRoot(machine), port).load(PLAN)
    kernel, initrd, cmdline, flags = port.loads[0]
    assert kernel == machine / "var/lib/kdump/vmlinuz"
    assert initrd == machine / "var/lib/kdump/initrd.img"
    assert (cmdline, flags) == ("root=/dev/vda ro", KEXEC_FILE_ON_CRASH)
    assert result.method == "kexec_file_load" and result.ok
    assert (machine / "proc/sys/kernel/panic_on_oops").read_text() == "1\n"
    assert record(machine)["ok"] is True and record(machine)["action"] == "load"
    assert arming.read_loaded(SystemRoot(machine)) is True


def test_load_without_initrd_passes_no_initramfs(machine: Path) -> None:
    port = FakeKernel(machine)
    plan = ArmPlan(PLAN.kernel, None, PLAN.cmdline, panic_on_oops=False)
    Arming(SystemRoot(machine), port).load(plan)
    assert port.loads[0][3] == KEXEC_FILE_ON_CRASH | KEXEC_FILE_NO_INITRAMFS
    assert (machine / "proc/sys/kernel/panic_on_oops").read_text() == "0\n"


def test_nothing_reserved_is_refused_before_the_kernel_call(machine: Path) -> None:
    (machine / "sys/kernel/kexec_crash_size").write_text("0\n")
    port = FakeKernel(machine)
    with pytest.raises(NotReservedError, match="crashkernel="):
        Arming(SystemRoot(machine), port).load(PLAN)
    assert port.loads == []
    saved = record(machine)
    assert (saved["action"], saved["ok"], saved["error"]) == ("load", False, "NotReservedError")
    assert "crashkernel=" in str(saved["message"])


def test_kernel_without_kexec_support(machine: Path) -> None:
    (machine / "sys/kernel/kexec_crash_size").unlink()
    with pytest.raises(KexecUnavailableError, match="CONFIG_KEXEC"):
        Arming(SystemRoot(machine), FakeKernel(machine)).load(PLAN)


def test_missing_kernel_names_the_path_and_the_fix(machine: Path) -> None:
    (machine / "var/lib/kdump/vmlinuz").unlink()
    with pytest.raises(KexecFailedError, match=r"/var/lib/kdump/vmlinuz does not exist.*symlinks"):
        Arming(SystemRoot(machine), FakeKernel(machine)).load(PLAN)


@pytest.mark.parametrize(
    ("err", "lockdown", "pattern"),
    [
        (errno.EADDRNOTAVAIL, None, r"\(0 MiB\) do not fit in the 192 MiB crashkernel"),
        (errno.EKEYREJECTED, None, r"rejected the crash kernel's signature \(EKEYREJECTED\)"),
        (errno.EPERM, "none [integrity] confidentiality", r"lockdown \(integrity\)"),
        (errno.EPERM, None, "CAP_SYS_BOOT"),
        (errno.ENOEXEC, None, "not a kernel image"),
        (errno.EIO, None, r"Input/output error \(EIO\)"),
    ],
)
def test_kernel_errors_become_clear_messages(
    machine: Path, err: int, lockdown: str | None, pattern: str
) -> None:
    if lockdown:
        (machine / "sys/kernel/security").mkdir(parents=True)
        (machine / "sys/kernel/security/lockdown").write_text(lockdown + "\n")
    with pytest.raises(KexecFailedError, match=pattern):
        Arming(SystemRoot(machine), FakeKernel(machine, fail=err)).load(PLAN)
    assert record(machine)["error"] == "KexecFailedError"


def test_eperm_for_a_non_root_caller() -> None:
    ctx = LoadContext(reserved_bytes=1 << 27, image_bytes=0, lockdown=None, euid=1000)
    assert "needs root" in str(kexec.explain_load_errno(errno.EPERM, ctx))


def test_eaddrnotavail_without_reservation_is_not_reserved() -> None:
    ctx = LoadContext(reserved_bytes=0, image_bytes=10, lockdown=None, euid=0)
    assert isinstance(kexec.explain_load_errno(errno.EADDRNOTAVAIL, ctx), NotReservedError)


def test_enosys_falls_back_to_kexec_with_an_argument_list(machine: Path) -> None:
    port = FakeKernel(machine, fail=errno.ENOSYS)
    plan = ArmPlan(
        PLAN.kernel, PLAN.initrd, "root=/dev/vda; rm -rf /", kexec_args=("--elf64-core-headers",)
    )
    result = Arming(SystemRoot(machine), port).load(plan)
    assert port.argvs == [
        [
            "/sbin/kexec",
            "-p",
            "--elf64-core-headers",
            "--command-line=root=/dev/vda; rm -rf /",
            "--initrd=/var/lib/kdump/initrd.img",
            "/var/lib/kdump/vmlinuz",
        ]
    ]
    assert result.method == "kexec"


def test_failed_fallback_reports_kexec_stderr(machine: Path) -> None:
    port = FakeKernel(machine, fail=errno.ENOSYS)
    port.kexec_result = (1, "Cannot load /var/lib/kdump/vmlinuz\nkexec_load failed: Bad address")
    with pytest.raises(KexecFailedError, match="kexec_load failed: Bad address"):
        Arming(SystemRoot(machine), port).load(PLAN)


def test_unload_is_a_no_op_when_nothing_is_loaded(machine: Path) -> None:
    port = FakeKernel(machine)
    assert Arming(SystemRoot(machine), port).unload().ok
    assert port.unloads == 0


def test_reload_unloads_then_loads(machine: Path) -> None:
    port = FakeKernel(machine)
    arm = Arming(SystemRoot(machine), port)
    arm.load(PLAN)
    arm.reload(PLAN)
    assert port.unloads == 1 and len(port.loads) == 2
    assert arm.loaded() is True


def test_unload_falls_back_to_kexec_u(machine: Path) -> None:
    (machine / "sys/kernel/kexec_crash_loaded").write_text("1\n")
    port = FakeKernel(machine, fail=errno.ENOSYS)
    Arming(SystemRoot(machine), port).unload()
    assert port.argvs == [["/sbin/kexec", "-p", "-u"]]


def test_a_held_lock_makes_a_second_arm_busy(machine: Path) -> None:
    lock = machine / "var/lib/kdump/arm.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        with pytest.raises(BusyError, match=r"arm\.lock"):
            Arming(SystemRoot(machine), FakeKernel(machine), lock_timeout=0.2).load(PLAN)
    finally:
        os.close(fd)
    Arming(SystemRoot(machine), FakeKernel(machine), lock_timeout=0.2).load(PLAN)


def test_crash_hotplug(machine: Path) -> None:
    root = SystemRoot(machine)
    assert not arming.kernel_updates_hotplug(root)
    (machine / "sys/devices/system/memory").mkdir(parents=True)
    (machine / "sys/devices/system/memory/crash_hotplug").write_text("1\n")
    assert arming.kernel_updates_hotplug(root)


def test_junk_record_reads_as_none(machine: Path) -> None:
    (machine / "var/lib/kdump/arm.state").write_text("{not json")
    assert arming.read_record(SystemRoot(machine)) is None


def test_real_kexec_file_load_error_is_explained() -> None:
    """The real syscall on this kernel: no crash reservation here, so it must fail, clearly.

    Kernels without kexec (like this test container's) say ENOSYS; kexec-capable ones without a
    reservation say EADDRNOTAVAIL or, for a file that is no kernel, ENOEXEC; EPERM without root.
    """
    with pytest.raises(OSError) as info:
        LinuxKexec().file_load(Path("/bin/true"), None, "console=ttyS0", kexec.load_flags(None))
    err = info.value.errno
    assert err in (errno.ENOSYS, errno.EADDRNOTAVAIL, errno.ENOEXEC, errno.EPERM)
    ctx = LoadContext(reserved_bytes=0, image_bytes=0, lockdown=None, euid=os.geteuid())
    message = str(kexec.explain_load_errno(err, ctx))
    expected = {
        errno.ENOSYS: "without kexec support",
        errno.EADDRNOTAVAIL: "no memory is reserved",
        errno.ENOEXEC: "not a kernel image",
        errno.EPERM: "permission",
    }[err]
    assert expected in message


def test_plan_follows_the_config_and_panic_on_oops_is_configurable(tmp_path: Path) -> None:
    from machines import RELEASE, build_machine

    from kdumpd.config import load_config
    from kdumpd.errors import ConfigError

    build_machine(tmp_path, loaded=False)
    root = SystemRoot(tmp_path)
    plan = arming.plan_from_config(root, load_config(root))
    assert (plan.kernel, plan.initrd, plan.panic_on_oops) == (
        "/var/lib/kdump/vmlinuz",
        "/var/lib/kdump/initrd.img",
        True,
    )
    assert "systemd.unit=kdump-tools-dump.service" in plan.cmdline
    assert "crashkernel=" not in plan.cmdline and f"vmlinuz-{RELEASE}" in plan.cmdline
    config = tmp_path / "etc/default/kdump-tools"
    config.write_text(config.read_text() + "\nKDUMP_PANIC_ON_OOPS=0\n")
    assert arming.plan_from_config(root, load_config(root)).panic_on_oops is False
    config.write_text(config.read_text() + "\nKDUMP_PANIC_ON_OOPS=yes\n")
    with pytest.raises(ConfigError, match="KDUMP_PANIC_ON_OOPS: expected 0 or 1"):
        arming.plan_from_config(root, load_config(root))
