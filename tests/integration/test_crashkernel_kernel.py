"""kdumpd's crashkernel= arithmetic against a real kernel's, booted under qemu.

The Debian 13 kernel boots with Ubuntu's tiered crashkernel= on several memory sizes; qemu is
stopped as soon as the kernel has printed its command line (the reservation is made before). The
kernel's e820 "usable" map is the RAM it compares against; kdumpd must predict the same size from
it, and print the same dmesg line for the region the kernel chose.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from kdumpd.crashkernel import MiB, dmesg_line, reservation
from tests.vmcores import KERNELS, fetch_kernel

pytestmark = pytest.mark.vm
UBUNTU = "crashkernel=2G-4G:320M,4G-32G:512M,32G-64G:1024M,64G-128G:2048M,128G-:4096M"


@pytest.fixture(scope="module")
def vmlinuz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("qemu-system-x86_64") is None:
        pytest.fail("qemu-system-x86_64 is missing (scripts/apt-packages.txt installs it)")
    package = fetch_kernel("trixie", tmp_path_factory.mktemp("kernel") / "fetch.log")
    found = sorted(KERNELS.glob(f"kernel/{package}_*/boot/vmlinuz-*"))
    assert found, f"{package} was fetched but no vmlinuz is unpacked under {KERNELS}"
    return found[-1]


def early_boot_log(vmlinuz: Path, memory: str, cmdline: str) -> str:
    """The kernel's log up to its "Kernel command line:" line, then qemu is killed."""
    argv = ["nice", "qemu-system-x86_64", "-m", memory, "-kernel", str(vmlinuz)]
    argv += ["-append", f"console=ttyS0 {cmdline}", "-nographic", "-no-reboot", "-monitor", "none"]
    lines: list[str] = []
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as qemu:
        assert qemu.stdout is not None
        try:
            for raw in qemu.stdout:
                lines.append(raw.decode(errors="replace"))
                if "Kernel command line:" in lines[-1]:
                    break
        finally:
            qemu.kill()
    return "".join(lines)


@pytest.mark.parametrize(
    ("memory", "size"),
    [("1G", None), ("2G", 320 * MiB), ("3G", 320 * MiB), ("4G", 512 * MiB)],
)
def test_reservation_matches_the_kernel(vmlinuz: Path, memory: str, size: int | None) -> None:
    log = early_boot_log(vmlinuz, memory, UBUNTU)
    usable = re.findall(r"BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] usable", log)
    assert usable, log
    system_ram = sum(int(end, 16) - int(start, 16) + 1 for start, end in usable)
    predicted = reservation([UBUNTU], system_ram)
    line = re.search(r"crashkernel reserved: 0x([0-9a-f]+) - 0x([0-9a-f]+) \((\d+) MB\)", log)
    if size is None:
        assert "crashkernel: invalid size" in log
        assert line is None
        assert (predicted.size, predicted.error) == (
            0,
            "invalid size: 1G is not below the 1G of RAM",
        )
        return
    assert line is not None, log
    start, end = int(line.group(1), 16), int(line.group(2), 16)
    assert end - start == size == predicted.size
    assert dmesg_line(start, predicted.size) == line.group(0)
