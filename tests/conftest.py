"""Shared pytest fixtures: paths to the repository and to ../shared (fixtures, tools)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_fixtures() -> Path:
    path = SHARED / "fixtures"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: tests need ../shared/fixtures beside the repository")
    return path


CACHE = Path(__import__("os").environ.get("KDUMPD_TEST_CACHE", "/var/tmp/kdumpd-test-cache"))


def _decompress_fixture(fixtures: Path, name: str) -> Path:
    """Decompress ``fixtures/NAME.zst`` once into the cache, checked against NAME.sha256.

    The file is written under a temporary name and renamed only after its hash matches, so a run
    that was interrupted never leaves a truncated vmcore that later runs would trust.
    """
    import hashlib
    import os
    import subprocess

    out = CACHE / name
    if out.exists():
        return out
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    subprocess.run(
        ["zstd", "-q", "-d", "--long=27", "-f", "-o", str(tmp), str(fixtures / f"{name}.zst")],
        check=True,
    )
    want = (fixtures / f"{name}.sha256").read_text().split()[0]
    digest = hashlib.sha256()
    with tmp.open("rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != want:
        tmp.unlink()
        pytest.fail(f"{name}: sha256 {digest.hexdigest()} != {want}")
    tmp.rename(out)
    return out


@pytest.fixture(scope="session")
def fixture_vmcore(shared_fixtures: Path) -> Path:
    """The genuine Debian 6.1 /proc/vmcore of ../shared/fixtures, decompressed (564 MiB)."""
    return _decompress_fixture(shared_fixtures, "vmcore-6.1-kexec")
