"""Fixtures of the chroot system tests: the freshly built .deb and a throw-away Debian 12 tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from . import image


@pytest.fixture(scope="session")
def deb(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    done = subprocess.run(
        ["bash", str(repo / "packaging/build-deb.sh"), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def rootfs_tree() -> Path:
    """The cached root filesystem, unpacked once beside its tarball and kept (unpacking and
    deleting it cost each session half a minute of disk writes). Tests see it only through an
    overlay, so it is never modified."""
    tar = image.build_rootfs()
    tree = tar.with_suffix(".tree")
    if not tree.is_dir():
        tmp = Path(tempfile.mkdtemp(dir=tar.parent, prefix=f"{tree.name}.tmp"))
        subprocess.run(["tar", "-C", str(tmp), "-xf", str(tar)], check=True)
        try:
            tmp.rename(tree)
        except OSError:  # another session unpacked it first
            shutil.rmtree(tmp)
        for old in tar.parent.glob("rootfs-*.tree"):
            if old != tree:  # an older package list's
                shutil.rmtree(old)
    return tree


@pytest.fixture
def root(tmp_path: Path, rootfs_tree: Path, deb: Path) -> Iterator[Path]:
    """A writable Debian 12 tree of this test's own, the .deb in /root: an overlay on the
    unpacked root filesystem (unpacking it per test cost 3-10 s of disk writes each)."""
    tree, upper, work = tmp_path / "root", tmp_path / "upper", tmp_path / "work"
    for path in (tree, upper, work):
        path.mkdir()
    layers = f"lowerdir={rootfs_tree},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", layers, str(tree)], check=True)
    mounts = [tree]
    try:
        (tree / "root/kdumpd.deb").write_bytes(deb.read_bytes())
        # /proc lets ischroot see that this is a chroot; policy-rc.d keeps services from starting.
        subprocess.run(["mount", "-t", "proc", "proc", str(tree / "proc")], check=True)
        mounts.append(tree / "proc")
        (tree / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        (tree / "usr/sbin/policy-rc.d").chmod(0o755)
        yield tree
    finally:
        for mount in reversed(mounts):
            subprocess.run(["umount", str(mount)], check=True)
        if not os.path.ismount(tree):
            shutil.rmtree(upper)
