"""Full-system proof of the first boot after an install into a chroot (an installer, mmdebstrap).

There MODULES=dep cannot see the target's root device, so the package leaves the capture initrd
to the installed system's first boot: ``kdumpd-initrd.service`` builds it before
``kdump-tools.service`` arms. This run installs the .deb with dpkg into the image's tree, never
boots it before, and checks that the first boot builds the initrd and arms, that a crash is
captured through that initrd, and that the boot after the crash does not build it again.

kdump-tools 1.8.1 does the same at its first boot (``kdump-tools.service`` runs mkinitramfs):
issue #6 measured 51-53 s for it. Used by tests/system/test_first_boot.py, and by hand:
``python3 -m tests.system.first_boot [--keep]``.
"""

from __future__ import annotations

import sys

from . import image
from .fullsystem import FullSystemRun, KdumpdProduct, check, main

INITRD_UNIT = "kdumpd-initrd.service"


class FirstBootRun(FullSystemRun):
    """The kdumpd .deb installed offline into the image, then its first boot, crash, capture."""

    PHASES = ("boot", "first_boot_ready", "ready", "crash", "initrd_kept", "dump_listed")
    # The capture initrd's mtime after the first boot built it.
    initrd_stamp = ""

    IMAGE_PHASE = "image, .deb installed in a chroot"

    def make_image(self) -> image.BaseImage:
        assert isinstance(self.product, KdumpdProduct) and self.product.deb is not None
        return image.build_installed_image(self.product.deb, self.workdir)

    def first_boot_ready(self) -> None:
        """qemu start → the console's `loaded kdump kernel` (`show` must then be ready); the
        initrd unit's own time (guest clock)."""
        with self.phase("first boot after a chroot install: qemu start → ready") as phase:
            phase.seconds, show = self.wait_armed()
            self.report.facts["kdump-config show, first boot"] = "\n" + show.rstrip()
            built = self.sh(f"ls -l {self.initrd}")
            self.report.facts["capture initrd, built at first boot"] = built.strip()
            building = self.oneshot_seconds(INITRD_UNIT)
            armed = self.unit_start_seconds("kdump-tools.service")
            self.initrd_stamp = self.initrd_mtime()
        self.timed("first boot after a chroot install: building the capture initrd", building)
        self.timed("first boot after a chroot install: kdump-tools.service start", armed)

    @property
    def initrd(self) -> str:
        """The guest's capture initrd for its kernel."""
        return f"/var/lib/kdump/initrd.img-{self.base.release}"

    def initrd_mtime(self) -> str:
        return self.sh(f"stat -c %Y {self.initrd}").strip()

    def oneshot_seconds(self, unit: str) -> float:
        """How long a oneshot unit without RemainAfterExit ran at this boot (its process start →
        exit, guest clock); it must have run and succeeded."""
        props = self.unit_properties(
            unit, "ExecMainStartTimestampMonotonic", "ExecMainExitTimestampMonotonic", "Result"
        )
        start = int(props["ExecMainStartTimestampMonotonic"])
        end = int(props["ExecMainExitTimestampMonotonic"])
        check(0 < start <= end and props["Result"] == "success", f"{unit} did not run", props)
        return (end - start) / 1e6

    def initrd_kept(self) -> None:
        """The boot after the crash (a later boot) must not build the initrd again."""
        with self.phase("later boot: capture initrd kept"):
            props = self.unit_properties(
                INITRD_UNIT, "ConditionResult", "ConditionTimestampMonotonic"
            )
            # Its condition was checked at this boot (the unit is still pulled in) and was false.
            evaluated = int(props["ConditionTimestampMonotonic"]) > 0
            check(evaluated, f"{INITRD_UNIT} was not even considered at this boot", props)
            check(props["ConditionResult"] == "no", f"{INITRD_UNIT} ran again", props)
            stamp = self.initrd_mtime()
            check(stamp == self.initrd_stamp, "the capture initrd was rebuilt", stamp)


if __name__ == "__main__":
    sys.exit(main(FirstBootRun))
