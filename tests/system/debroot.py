"""A throw-away Debian 12 root filesystem tree to install the .deb into and run commands in.

The tree is the cached mmdebstrap tarball of the full-system test (image.py), unpacked afresh for
each test; commands run in it with chroot, with /proc mounted so that ischroot and friends can
tell that they are in a chroot.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from . import image

ENV = {
    "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
    "DEBIAN_FRONTEND": "noninteractive",
    "LC_ALL": "C",
}


def chroot(root: Path, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["chroot", str(root), "/bin/sh", "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=ENV,
    )
    if check:
        assert done.returncode == 0, f"{script}\n{done.stdout}\n{done.stderr}"
    return done


def cached_debs(name: str, packages: tuple[str, ...]) -> list[Path]:
    """Debian 12 packages that the test root filesystem lacks, downloaded once into the cache."""
    cache = image.CACHE / f"debs-{name}"
    debs = sorted(cache.glob("*.deb"))
    if len(debs) < len(packages):
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["apt-get", "download", *packages], cwd=cache, capture_output=True, check=True
        )
        debs = sorted(cache.glob("*.deb"))
    return debs


def install_debs(root: Path, debs: list[Path]) -> None:
    """Install downloaded packages in the tree with dpkg, as an administrator would."""
    (root / "root/debs").mkdir(exist_ok=True)
    for deb in debs:
        (root / "root/debs" / deb.name).write_bytes(deb.read_bytes())
    chroot(root, "dpkg -i /root/debs/*.deb")


def use_kdump(root: Path) -> str:
    lines = (root / "etc/default/kdump-tools").read_text().splitlines()
    return [line for line in lines if line.startswith("USE_KDUMP=")][-1]


def kernel_release(root: Path) -> str:
    """The release of the one kernel the test root filesystem has (linux-image-amd64's)."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    assert len(kernels) == 1, kernels
    return kernels[0].name.removeprefix("vmlinuz-")
