"""Debian 12's kdump-tools 1.8.1 with makedumpfile, as a ``Product`` of the full-system run.

The peer kdumpd replaces, installed the way a user would on a running Debian 12 (apt with the
downloaded packages, debconf answer "use kdump": yes), so bench/fullsystem_peer.py can run the
same install → reboot → crash → dump cycle on it as on kdumpd. makedumpfile is only a Recommends
of kdump-tools but without it kdump-tools copies the whole /proc/vmcore, so it is installed too.

One departure from a user's install: the rebuild of the normal boot's initrd that kdump-tools'
initramfs hook (and busybox) trigger is skipped. Under TCG on a loaded 2-core host it ran for
more than 15 minutes without finishing, and the guest boots qemu's -kernel/-initrd, never that
file. kdump-tools' own capture initrd (mkinitramfs, at install) is built as usual.
"""

from __future__ import annotations

from pathlib import Path

from .debroot import cached_debs
from .fullsystem import FullSystemRun, PhaseFailed, SaveMarks
from .test_deb_chroot import KDUMP_TOOLS_DEBS

# makedumpfile 1.7.2 and the libraries it needs that the test image lacks (dpkg in the guest
# refuses the install if one is missing).
MAKEDUMPFILE_DEBS = ("makedumpfile", "libdw1", "libelf1")
# update-initramfs diverted to true for the install (see above), restored after it.
SKIP_INITRAMFS_UPDATE = (
    "dpkg-divert --local --rename --add /usr/sbin/update-initramfs >/dev/null"
    " && ln -s /bin/true /usr/sbin/update-initramfs"
)
RESTORE_INITRAMFS_UPDATE = (
    "rm /usr/sbin/update-initramfs"
    " && dpkg-divert --local --rename --remove /usr/sbin/update-initramfs >/dev/null"
)


class KdumpToolsProduct:
    name = "kdump-tools"
    # kdump-config's own progress lines in the capture boot (journal+console).
    marks = SaveMarks(
        dmesg=r"running makedumpfile --dump-dmesg",
        dump=r"running makedumpfile .*\| compress",
        saved=r"saved vmcore in",
    )

    def __init__(self) -> None:
        self.debs: list[Path] = []

    def prepare(self, run: FullSystemRun) -> None:
        with run.phase("download-debs"):
            self.debs = [
                *cached_debs("kdump-tools", KDUMP_TOOLS_DEBS),
                *cached_debs("makedumpfile", MAKEDUMPFILE_DEBS),
            ]
            run.report.facts["packages"] = ", ".join(
                d.name.split("_")[0] + " " + d.name.split("_")[1].replace("%3a", ":")
                for d in self.debs
                if d.name.startswith(("kdump-tools_", "makedumpfile_"))
            )

    def install(self, run: FullSystemRun) -> None:
        run.sh("mkdir -p /root/peer")
        for deb in self.debs:
            run.vm.put(f"/root/peer/{deb.name}", deb.read_bytes())
        run.sh("echo 'kdump-tools kdump-tools/use_kdump boolean true' | debconf-set-selections")
        run.sh(SKIP_INITRAMFS_UPDATE)
        out = run.vm.sh(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            "/root/peer/*.deb 2>&1",
            timeout=1200,
        )
        run.sh(RESTORE_INITRAMFS_UPDATE)
        (run.workdir / "install.log").write_text(out.out)
        if out.rc != 0:
            raise PhaseFailed(f"apt-get install of kdump-tools and makedumpfile failed\n{out}")
        # Its postinst starts kdump-tools.service on a running system: the capture initrd is
        # then built during the install, not at the first boot.
        initrd = run.sh("ls -ln /var/lib/kdump/initrd.img-*")
        run.report.facts["capture initrd"] = f"{int(initrd.split()[4]) >> 10} KiB, built at install"
        armed = run.unit_start_seconds("kdump-tools.service")
        run.report.facts["kdump-tools.service start at install"] = f"{armed:.1f} s"

    def ready_again(self, run: FullSystemRun, show: str) -> None:
        """1.8.1's `kdump-config show` has no suggested size; ready is all it says."""
