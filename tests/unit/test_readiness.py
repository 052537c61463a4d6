"""Readiness of whole fake machines: exact state, problems and ``kdump-config show`` lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdumpd.cli.kdump_config import main
from kdumpd.config import load_config
from kdumpd.machine import read_system_state
from kdumpd.readiness import Report, assess, pe_signed
from kdumpd.system import SystemRoot
from tests.unit.machines import BASE_CMDLINE, RELEASE, GiB, MiB, build_machine, pe_image

LINKS = [
    f"   /var/lib/kdump/vmlinuz: symbolic link to /boot/vmlinuz-{RELEASE}",
    "kdump initrd: ",
    f"   /var/lib/kdump/initrd.img: symbolic link to /var/lib/kdump/initrd.img-{RELEASE}",
]
TOO_SMALL = (
    "  - crashkernel-too-small (warning): 320M reserved is less than the suggested 441M: the"
    " capture kernel may run out of memory; raise crashkernel= in"
    " /etc/default/grub.d/kdump-tools.cfg, run update-grub and reboot"
)
NOT_LOADED = (
    "  - not-loaded: the capture kernel is not loaded: run 'kdump-config load'"
    " (or systemctl restart kdump-tools) once the problems above are fixed"
)


def report_for(root: Path, free: int = 100 * GiB) -> Report:
    sroot = SystemRoot(root)
    config = load_config(sroot)
    return assess(sroot, config, read_system_state(sroot, config.coredir, lambda _: free))


def codes(report: Report) -> list[str]:
    return [p.code for p in report.problems]


def show(root: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str]]:
    rc = main(["--root", str(root), *args])
    return rc, capsys.readouterr().out.splitlines()


def test_ubuntu_3g_tiered_crashkernel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_machine(tmp_path)
    report = report_for(tmp_path)
    assert (report.state, codes(report)) == ("ready", ["crashkernel-too-small"])
    assert (report.expected.size, report.reserved) == (320 * MiB, 320 * MiB)
    assert show(tmp_path, capsys, "show") == (
        0,
        [
            "DUMP_MODE:\t\tkdump",
            "USE_KDUMP:\t\t1",
            "KDUMP_COREDIR:\t\t/var/crash",
            "crashkernel addr: 0x60000000",
            *LINKS,
            "current state:    ready to kdump",
            "",
            "crashkernel suggested size: 441M",
            "crashkernel reserved: 0x0000000060000000 - 0x0000000074000000 (320 MB)",
            "",
            "kexec command:",
            "  no kexec command recorded",
            "",
            "problems:",
            TOO_SMALL,
        ],
    )
    assert show(tmp_path, capsys, "status") == (0, ["current state   : ready to kdump"])


def test_no_crashkernel(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_machine(tmp_path, cmdline=BASE_CMDLINE, crash=None, loaded=False)
    report = report_for(tmp_path)
    assert (report.state, codes(report)) == ("not-ready", ["crashkernel-missing", "not-loaded"])
    rc, lines = show(tmp_path, capsys, "show")
    assert rc == 0
    assert lines[3] == "crashkernel addr: "
    assert lines[7:] == [
        "current state:    Not ready to kdump",
        "",
        "crashkernel suggested size: 441M",
        "crashkernel reserved: none (no crashkernel= on the kernel command line)",
        "",
        "kexec command:",
        "  no kexec command recorded",
        "",
        "problems:",
        "  - crashkernel-missing: crashkernel= is not on the kernel command line: add"
        " crashkernel=512M-:441M to GRUB_CMDLINE_LINUX_DEFAULT (kdumpd installs"
        " /etc/default/grub.d/kdump-tools.cfg), run update-grub and reboot",
        NOT_LOADED,
    ]
    rc, lines = show(tmp_path, capsys, "status")
    assert (rc, lines[0]) == (3, "current state   : Not ready to kdump")


def test_crashkernel_given_but_nothing_reserved(tmp_path: Path) -> None:
    build_machine(tmp_path, cmdline=f"{BASE_CMDLINE} crashkernel=256M", crash=None, loaded=False)
    report = report_for(tmp_path)
    assert (report.state, codes(report)) == (
        "not-ready",
        ["crashkernel-not-reserved", "not-loaded"],
    )
    assert report.problems[0].message == (
        "Memory for crashkernel is not reserved: crashkernel=256M asks for 256M but the kernel"
        " could not reserve it at boot (see: dmesg | grep -i crashkernel); fix crashkernel= in"
        " /etc/default/grub.d/kdump-tools.cfg, run update-grub and reboot"
    )


def test_one_gb_machine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_machine(tmp_path, ram=GiB, crash=None, loaded=False)
    report = report_for(tmp_path)
    assert (report.state, codes(report)) == (
        "not-ready",
        ["crashkernel-not-reserved", "not-loaded"],
    )
    rc, lines = show(tmp_path, capsys, "show")
    assert rc == 0
    assert lines[7:] == [
        "current state:    Not ready to kdump",
        "",
        "crashkernel suggested size: 453M",
        "crashkernel reserved: none (crashkernel=2G-4G:320M,4G-32G:512M,32G-64G:1024M,"
        "64G-128G:2048M,128G-:4096M)",
        "",
        "kexec command:",
        "  no kexec command recorded",
        "",
        "problems:",
        "  - crashkernel-not-reserved: Memory for crashkernel is not reserved:"
        " crashkernel=2G-4G:320M,4G-32G:512M,32G-64G:1024M,64G-128G:2048M,128G-:4096M reserves"
        " nothing with 1G of RAM, the kernel rejects it (invalid size: 1G is not below the 1G of"
        " RAM); fix crashkernel= in /etc/default/grub.d/kdump-tools.cfg, run update-grub and"
        " reboot",
        NOT_LOADED,
    ]


def test_more_than_2tb(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tib3 = 3 * 1024 * GiB
    build_machine(tmp_path, ram=tib3, crash=(tib3 - 8 * GiB, 4096 * MiB), cpus=64)
    report = report_for(tmp_path, free=500 * GiB)
    assert (report.expected.size, report.reserved) == (4096 * MiB, 4096 * MiB)
    assert (report.state, codes(report)) == ("ready", ["coredir-low-space"])
    assert report.problems[0].severity == "warning"
    assert report_for(tmp_path, free=4 * 1024 * GiB).problems == ()
    rc, lines = show(tmp_path, capsys, "default-enable")
    assert rc == 3
    assert "memory:       FAIL  3072.0 GiB of RAM and swap" in lines[2]


def test_fadump(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_machine(
        tmp_path, cmdline=f"{BASE_CMDLINE} fadump=on", crash=None, loaded=False, fadump=(1, 1)
    )
    report = report_for(tmp_path)
    assert (report.state, report.dump_mode, codes(report)) == ("ready", "fadump", [])
    rc, lines = show(tmp_path, capsys, "show")
    assert rc == 0
    assert lines == [
        "DUMP_MODE:\t\tfadump",
        "USE_KDUMP:\t\t1",
        "KDUMP_COREDIR:\t\t/var/crash",
        *LINKS,
        "current state:    ready to fadump",
        "",
        "problems: none",
    ]
    (tmp_path / "sys/kernel/fadump_registered").write_text("0\n")
    assert codes(report_for(tmp_path)) == ["fadump-not-registered"]


@pytest.mark.parametrize("signed", [True, False])
def test_secure_boot(tmp_path: Path, signed: bool) -> None:
    build_machine(tmp_path, secure_boot=True, signed_kernel=signed)
    report = report_for(tmp_path)
    assert report.system.kexec_file_required
    if signed:
        assert (report.state, codes(report)) == ("ready", ["crashkernel-too-small"])
    else:
        assert (report.state, codes(report)) == (
            "not-ready",
            ["crashkernel-too-small", "kernel-unsigned"],
        )
        assert report.problems[1].message.startswith(
            "Secure Boot is on: only a signed kernel can be loaded (kexec_file_load)"
        )


def test_pe_signature_detection() -> None:
    assert pe_signed(pe_image(True)) is True
    assert pe_signed(pe_image(False)) is False
    assert pe_signed(b"\x7fELF" + bytes(100)) is None


def test_sysrq_zero(tmp_path: Path) -> None:
    build_machine(tmp_path, sysrq=0)
    report = report_for(tmp_path)
    assert (report.state, codes(report)) == ("ready", ["crashkernel-too-small", "sysrq-disabled"])
    assert report.problems[1].message.startswith("kernel.sysrq is 0: the SysRq keys are disabled")


def test_disabled_and_missing_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_machine(tmp_path, config="USE_KDUMP=0\n")
    assert report_for(tmp_path).state == "disabled"
    (tmp_path / "etc/default/kdump-tools").unlink()
    report = report_for(tmp_path)
    assert report.state == "disabled"
    assert codes(report)[:2] == ["kdump-disabled", "config-missing"]
    assert show(tmp_path, capsys, "status")[0] == 3


def test_no_kexec_support(tmp_path: Path) -> None:
    build_machine(tmp_path, cmdline=BASE_CMDLINE, crash=None, loaded=None, sysrq=None)
    assert codes(report_for(tmp_path)) == [
        "kexec-unsupported",
        "crashkernel-missing",
        "sysrq-unavailable",
    ]


def test_high_and_low_regions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_machine(
        tmp_path,
        ram=8 * GiB,
        cmdline=f"{BASE_CMDLINE} crashkernel=1G,high",
        crash=(0x200000000, GiB),
        crash_low=(0x50000000, 256 * MiB),
    )
    report = report_for(tmp_path)
    assert (report.state, codes(report)) == ("ready", [])
    assert (report.expected.total, report.reserved) == (GiB + 256 * MiB, GiB)
    rc, lines = show(tmp_path, capsys, "show")
    assert rc == 0
    assert lines[3] == "crashkernel addr: 0x50000000 0x200000000"
    assert lines[10:12] == [
        "crashkernel low memory reserved: 0x50000000 - 0x60000000 (256 MB)",
        "crashkernel reserved: 0x0000000200000000 - 0x0000000240000000 (1024 MB)",
    ]


def test_remote_targets_in_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = (
        "USE_KDUMP=1\nSSH=kdump@[fd00::1]\nNFS=nas:/crash\nFTP=ftp.example.org:/in\n"
        "FTP_USER=up\nFTP_PASSWORD='s3cret'\nHOSTTAG=hostname\n"
    )
    build_machine(tmp_path, config=config)
    rc, lines = show(tmp_path, capsys, "show")
    assert rc == 0
    assert lines[4:16] == [
        f"   /boot/vmlinuz-{RELEASE}",
        "kdump initrd: ",
        f"   /boot/initrd.img-{RELEASE}",
        "SSH:              kdump@[fd00::1]",
        "SSH_KEY:          /root/.ssh/kdump_id_rsa",
        "NFS:              nas:/crash",
        "NFS_TIMEO:        600",
        "NFS_RETRANS       3",
        "FTP:              ftp.example.org:/in",
        "FTP_USER:         up",
        "FTP_PASSWORD:     is set",
        "FTP_PORT:         21",
    ]
    assert lines[16] == "HOSTTAG:          hostname"
    assert "s3cret" not in "\n".join(lines)
    assert main(["--root", str(tmp_path), "show", "--json"]) == 0
    assert '"FTP_PASSWORD": "is set"' in capsys.readouterr().out


def test_links_to_another_kernel(tmp_path: Path) -> None:
    m = build_machine(tmp_path)
    m.sparse("/boot/vmlinuz-6.17.0-1-generic", 15 * MiB)
    m.link("/var/lib/kdump/vmlinuz", "/boot/vmlinuz-6.17.0-1-generic")
    report = report_for(tmp_path)
    assert (report.state, codes(report)) == (
        "ready",
        ["crashkernel-too-small", "kernel-link-stale"],
    )
    assert report.problems[1].message == (
        "/var/lib/kdump/vmlinuz is for 6.17.0-1-generic, not the running 6.18.0-8-generic:"
        " 'kdump-config load' relinks them (or 'kdump-config symlinks 6.18.0-8-generic')"
    )


def test_default_enable_counts_ram_like_the_kernel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build_machine(tmp_path, ram=6 * GiB, cpus=4)  # iomem: 6G less the firmware holes
    rc, lines = show(tmp_path, capsys, "default-enable")
    assert lines[:3] == [
        "architecture: ok    x86_64 is supported",
        "cpus:         ok    4 CPU threads, need at least 4",
        "memory:       ok    6.0 GiB of RAM and swap, need at least 6 GiB and less than 2 TiB",
    ]
    assert rc == (0 if lines[3].startswith("var-space:    ok") else 3)
    assert lines[4] == f"enable kdump by default: {'yes' if rc == 0 else 'no'}"


def test_default_enable_counts_cpus_without_sys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An installer's chroot mounts /proc but not /sys: count /proc/cpuinfo, as nproc would."""
    build_machine(tmp_path, ram=6 * GiB, cpus=4)
    (tmp_path / "sys/devices/system/cpu/online").unlink()
    cpuinfo = "".join(f"processor\t: {i}\nvendor_id\t: GenuineIntel\n\n" for i in range(6))
    (tmp_path / "proc/cpuinfo").write_text(cpuinfo)
    _, lines = show(tmp_path, capsys, "default-enable")
    assert lines[1] == "cpus:         ok    6 CPU threads, need at least 4"
    (tmp_path / "proc/cpuinfo").unlink()  # neither mounted: unknown, not "0"
    _, lines = show(tmp_path, capsys, "default-enable")
    assert lines[1] == "cpus:         FAIL  an unknown number of CPU threads, need at least 4"


@pytest.mark.parametrize(
    ("path", "text", "why"),
    [
        (
            "/sys/kernel/security/lockdown",
            "none [integrity] confidentiality\n",
            "lockdown is integrity",
        ),
        ("/sys/kernel/security/securelevel", "1\n", "securelevel is 1"),
    ],
)
def test_lockdown_needs_a_signed_kernel(tmp_path: Path, path: str, text: str, why: str) -> None:
    m = build_machine(tmp_path, signed_kernel=False)
    assert codes(report_for(tmp_path)) == ["crashkernel-too-small"]  # no lockdown: any kernel
    m.write(path, text)
    report = report_for(tmp_path)
    assert (report.state, codes(report)) == (
        "not-ready",
        ["crashkernel-too-small", "kernel-unsigned"],
    )
    assert why in report.problems[1].message
