"""The part of the qemu command line that both VM harnesses share.

tests/vm (crash-and-capture cycles) and tests/system (a full Debian system) each boot an x86_64
kernel directly under TCG with its console on a file; they add their own disks, devices and
options after this.
"""

from __future__ import annotations

from pathlib import Path


def direct_boot_argv(
    *, memory: str, kernel: Path, initrd: Path, append: str, serial_log: Path
) -> list[str]:
    """qemu-system-x86_64 booting KERNEL with INITRD and APPEND, ttyS0 written to SERIAL_LOG."""
    return [
        "qemu-system-x86_64",
        "-accel",
        "tcg",
        # everything TCG emulates but 5-level paging: the guest kernel walks 4-level page
        # tables, as on most x86_64 machines
        "-cpu",
        "max,la57=off",
        "-smp",
        "2",
        "-m",
        memory,
        "-display",
        "none",
        "-serial",
        f"file:{serial_log}",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        append,
    ]
