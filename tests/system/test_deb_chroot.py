"""The maintainer scripts in a Debian 12 chroot: debconf answer -> USE_KDUMP, reconfigure, purge.

Fast companion of test_full_system.py (no qemu): the cached root filesystem of the system test is
unpacked, the freshly built .deb is installed with dpkg in a chroot, and what the scripts leave
behind is checked. In a chroot the capture initrd is not built (MODULES=dep would look at the
host's root device), as kdump-tools does.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .debroot import cached_debs, chroot, install_debs, use_kdump

pytestmark = pytest.mark.system

# kdump-tools from Debian 12 and what it needs beyond the test root filesystem.
KDUMP_TOOLS_DEBS = ("kdump-tools", "bsdextrautils", "busybox", "file", "libmagic1", "libmagic-mgc")


@pytest.mark.parametrize("answer, expected", [("true", "USE_KDUMP=1"), ("false", "USE_KDUMP=0")])
def test_preseeded_answer_becomes_use_kdump(root: Path, answer: str, expected: str) -> None:
    chroot(root, f"echo 'kdumpd kdumpd/use_kdump boolean {answer}' | debconf-set-selections")
    out = chroot(root, "dpkg -i /root/kdumpd.deb 2>&1")
    assert use_kdump(root) == expected
    assert "in a chroot" in out.stdout  # the capture initrd waits for the real system
    assert (root / "var/lib/kdump").is_dir() and (root / "var/crash").is_dir()
    # Enabled at boot (basic.target), the bus-activated daemon is not.
    assert (root / "etc/systemd/system/basic.target.wants/kdump-tools.service").is_symlink()
    assert (root / "etc/systemd/system/basic.target.wants/kdumpd-meminfo.service").is_symlink()
    assert not list((root / "etc/systemd/system").rglob("kdumpd.service"))
    # Every other line is the shipped template, comments and all.
    template = (root / "usr/share/kdumpd/kdump-tools.conf").read_text().splitlines()
    installed = (root / "etc/default/kdump-tools").read_text().splitlines()
    assert [line for line in installed if not line.startswith("USE_KDUMP=")] == [
        line for line in template if not line.startswith("USE_KDUMP=")
    ]


def test_admin_edits_survive_reinstall_and_answer_still_applies(root: Path) -> None:
    chroot(root, "echo 'kdumpd kdumpd/use_kdump boolean true' | debconf-set-selections")
    chroot(root, "dpkg -i /root/kdumpd.deb")
    conf = root / "etc/default/kdump-tools"
    conf.write_text(conf.read_text().replace('KDUMP_COREDIR="/var/crash"', 'KDUMP_COREDIR="/srv"'))
    chroot(root, "echo 'kdumpd kdumpd/use_kdump boolean false' | debconf-set-selections")
    chroot(root, "dpkg -i /root/kdumpd.deb")  # an upgrade/reinstall runs postinst again
    text = conf.read_text()
    assert 'KDUMP_COREDIR="/srv"' in text
    assert use_kdump(root) == "USE_KDUMP=0"


def test_purge_removes_what_it_created(root: Path) -> None:
    chroot(root, "echo 'kdumpd kdumpd/use_kdump boolean true' | debconf-set-selections")
    chroot(root, "dpkg -i /root/kdumpd.deb")
    (root / "var/lib/kdump/initrd.img-test").write_bytes(b"x")  # as the hook would leave it
    chroot(root, "dpkg --purge kdumpd")
    for path in (
        "var/lib/kdump",
        "etc/default/kdump-tools",
        "etc/default/grub.d/kdump-tools.cfg",
        "etc/kdump/sysctl.conf",
        "etc/kernel/postinst.d/kdump-tools",
        "etc/systemd/system/basic.target.wants/kdump-tools.service",
        "etc/systemd/system/basic.target.wants/kdumpd-meminfo.service",
        "usr/sbin/kdump-config",
    ):
        assert not (root / path).exists(), path
    assert chroot(root, "debconf-show kdumpd").stdout.strip() == ""
    assert "kdumpd" not in chroot(root, "ucfq -w /etc/default/kdump-tools").stdout


def test_takes_over_from_kdump_tools(root: Path) -> None:
    install_debs(root, cached_debs("kdump-tools", KDUMP_TOOLS_DEBS))
    conf = root / "etc/default/kdump-tools"
    conf.write_text(conf.read_text().replace('KDUMP_COREDIR="/var/crash"', 'KDUMP_COREDIR="/srv"'))
    out = chroot(root, "dpkg -i /root/kdumpd.deb 2>&1").stdout
    assert "Removing kdump-tools" in out
    states = chroot(root, "dpkg-query -W -f '${Package} ${db:Status-Abbrev}\n' kdump-tools kdumpd")
    status = dict(line.split(" ", 1) for line in states.stdout.splitlines())
    assert status["kdump-tools"][1] == "c", status  # removed, its config files left
    assert status["kdumpd"].startswith("ii"), status
    # The administrator's settings stay, kdump-tools' USE_KDUMP=1 included; the hooks and the
    # grub snippet (unmodified conffiles) are now kdumpd's.
    assert 'KDUMP_COREDIR="/srv"' in conf.read_text() and use_kdump(root) == "USE_KDUMP=1"
    assert "kdumpd" in (root / "etc/kernel/postinst.d/kdump-tools").read_text()
    assert "crashkernel=512M-:192M" in (root / "etc/default/grub.d/kdump-tools.cfg").read_text()
    assert "kdumpd" in chroot(root, "ucfq -w /etc/default/kdump-tools").stdout
