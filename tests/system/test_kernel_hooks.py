"""The kernel postinst.d/postrm.d hooks driven by Debian 12's real linux-image package scripts.

In the Debian 12 chroot, the linux-image-<release> package's own maintainer scripts run (through
dpkg-reconfigure and dpkg --purge): they call run-parts over /etc/kernel/postinst.d or postrm.d
with the kernel version and image path as arguments and DEB_MAINT_PARAMS in the environment, as
on a kernel install or removal, and the kdumpd hooks run among initramfs-tools' and do their part.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .debroot import ENV, chroot, kernel_release

pytestmark = pytest.mark.system

HOOK_POSTINST = "/etc/kernel/postinst.d/kdump-tools"
KDUMP_DIR = "var/lib/kdump"


def install_kdumpd(root: Path) -> str:
    """kdumpd installed with kdump enabled; the release of the chroot's kernel."""
    # initramfs-tools' own hook runs in the same run-parts, before ours: MODULES=list keeps its
    # rebuild of the normal initrd to seconds (MODULES=most packs every module: half a minute).
    (root / "etc/initramfs-tools/conf.d/zz-kdumpd-test").write_text("MODULES=list\n")
    chroot(root, "echo 'kdumpd kdumpd/use_kdump boolean true' | debconf-set-selections")
    chroot(root, "dpkg -i /root/kdumpd.deb")
    return kernel_release(root)


def purge_kernel(root: Path, release: str) -> str:
    """Remove and purge the kernel package (and its metapackage); dpkg's output."""
    return chroot(root, f"dpkg --purge linux-image-amd64 linux-image-{release} 2>&1").stdout


def hook_output(transcript: str, hook: str) -> str:
    """The lines run-parts --report shows under ``hook:`` (up to the next hook's name)."""
    _, found, rest = transcript.partition(f"{hook}:\n")
    assert found, f"run-parts did not report {hook}:\n{transcript}"
    lines = []
    for line in rest.splitlines():
        if line.startswith("/etc/kernel/"):
            break
        lines.append(line)
    return "\n".join(lines)


def test_kernel_postinst_runs_the_hook_which_defers_the_build_in_a_chroot(root: Path) -> None:
    release = install_kdumpd(root)
    out = chroot(root, f"dpkg-reconfigure linux-image-{release} 2>&1").stdout
    assert hook_output(out, HOOK_POSTINST) == (
        f"kdumpd: in a chroot: the capture initrd for {release} is built on the target system"
    )
    assert not list((root / KDUMP_DIR).iterdir())


def test_kernel_postinst_builds_the_capture_initrd_on_a_system(root: Path) -> None:
    """As PID 1 of its own PID namespace the chroot is no chroot to ischroot: a container."""
    release = install_kdumpd(root)
    own_pid_1 = ["unshare", "--pid", "--fork", f"--mount-proc={root}/proc"]
    script = f"dpkg-reconfigure linux-image-{release} 2>&1"
    done = subprocess.run(
        [*own_pid_1, "chroot", str(root), "/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=ENV,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    said = hook_output(done.stdout, HOOK_POSTINST)
    initrd = f"/{KDUMP_DIR}/initrd.img-{release}"
    assert f"kdumpd: building the capture initrd {initrd}\nkdumpd: built {initrd} (" in said
    # A real initramfs for that kernel, with the administrator's MODULES=list kept.
    listing = chroot(root, f"lsinitramfs {initrd}").stdout.splitlines()
    assert "init" in listing and f"usr/lib/modules/{release}/modules.dep" in listing, listing
    assert "conf/conf.d/zz-kdumpd" not in listing
    size = (root / KDUMP_DIR / f"size_initrd.img-{release}").read_text()
    assert int(size) > 0
    assert sorted(p.name for p in (root / KDUMP_DIR).iterdir()) == [
        f"initrd.img-{release}",
        f"size_initrd.img-{release}",
    ]


def leave_kernel_files(root: Path, release: str) -> list[str]:
    """What the hooks and kdump-config leave per kernel, as placeholders; their names."""
    names = [
        f"initrd.img-{release}",
        f"size_initrd.img-{release}",
        f"mem-{release}",
        f"latest_sysctls-{release}",
    ]
    for name in names:
        (root / KDUMP_DIR / name).write_text("x\n")
    return names


@pytest.mark.parametrize("link_to_removed", ["vmlinuz", "initrd.img"])
def test_kernel_removal_runs_the_postrm_hook(root: Path, link_to_removed: str) -> None:
    release = install_kdumpd(root)
    kdump = root / KDUMP_DIR
    removed = leave_kernel_files(root, release)
    other = "6.1.0-99-amd64"  # another kernel's files and links stay
    (kdump / f"initrd.img-{other}").write_text("x\n")
    targets = {
        "vmlinuz": (f"/boot/vmlinuz-{release}", f"/boot/vmlinuz-{other}"),
        "initrd.img": (f"/{KDUMP_DIR}/initrd.img-{release}", f"/{KDUMP_DIR}/initrd.img-{other}"),
    }
    for link, (to_removed, to_other) in targets.items():
        (kdump / link).symlink_to(to_removed if link == link_to_removed else to_other)
    out = purge_kernel(root, release)
    query = f"dpkg-query -W -f '${{db:Status-Abbrev}}' linux-image-{release}"
    assert chroot(root, query, check=False).stdout.strip() in ("", "pn", "un"), out  # purged
    assert not any((kdump / name).exists() for name in removed), out
    assert not (kdump / link_to_removed).is_symlink()
    kept = sorted(p.name for p in kdump.iterdir())
    assert kept == sorted([f"initrd.img-{other}", *set(targets) - {link_to_removed}])


def test_kernel_upgrade_keeps_the_capture_initrd(root: Path) -> None:
    """The same kernel ABI upgraded: dpkg calls the old package's postrm with 'upgrade'."""
    release = install_kdumpd(root)
    names = leave_kernel_files(root, release)
    version = chroot(root, f"dpkg-query -W -f '${{Version}}' linux-image-{release}").stdout
    chroot(root, f"/var/lib/dpkg/info/linux-image-{release}.postrm upgrade {version}")
    assert sorted(p.name for p in (root / KDUMP_DIR).iterdir()) == sorted(names)


def test_hooks_left_by_a_removed_kdumpd_stay_quiet(root: Path) -> None:
    """Removed but not purged, kdumpd's hooks (conffiles) stay: kernel updates must still work."""
    release = install_kdumpd(root)
    names = leave_kernel_files(root, release)
    chroot(root, "dpkg --remove kdumpd")
    assert (root / HOOK_POSTINST.lstrip("/")).exists()
    out = chroot(root, f"dpkg-reconfigure linux-image-{release} 2>&1").stdout
    out += purge_kernel(root, release)
    assert "kdump-tools:" not in out and "kdumpd" not in out, out
    # Nothing ran to remove them: purging kdumpd removes /var/lib/kdump.
    assert sorted(p.name for p in (root / KDUMP_DIR).iterdir()) == sorted(names)
