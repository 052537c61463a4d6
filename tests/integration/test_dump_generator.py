"""The installed generator script (units/kdumpd-dump-generator), run as systemd runs it.

systemd waits for every generator before it starts any unit, so in a normal boot the script must
answer from the shell without starting Python; in a capture boot it must write the drop-in.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "units" / "kdumpd-dump-generator"
DROP_IN = "kdump-tools-dump.service.d/50-kdumpd-targets.conf"


def _run(root: Path, pythonpath: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KDUMPD_ROOT": str(root), "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [str(SCRIPT), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def _generate(root: Path, out: Path, pythonpath: Path) -> subprocess.CompletedProcess[str]:
    """As systemd runs it: the normal, early and late generator directories."""
    return _run(root, pythonpath, str(out), str(out / "early"), str(out / "late"))


def _tracing_package(tmp_path: Path) -> tuple[Path, Path]:
    """A ``kdumpd`` package that only records being imported: proof that Python started."""
    site = tmp_path / "site"
    (site / "kdumpd").mkdir(parents=True)
    marker = tmp_path / "python-started"
    (site / "kdumpd" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    return site, marker


def test_a_normal_boot_does_not_start_python(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    site, marker = _tracing_package(tmp_path)
    out = tmp_path / "gen"
    done = _generate(root, out, site)
    assert (done.returncode, done.stderr) == (0, "")
    assert not marker.exists()
    assert not out.exists()
    # The same tree as a capture boot does reach Python (the tracing package then fails).
    (root / "proc/vmcore").write_bytes(b"\x7fELF")
    _generate(root, out, site)
    assert marker.exists()


def test_a_capture_boot_gets_the_drop_in(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/vmcore").write_bytes(b"\x7fELF")
    (root / "etc/default").mkdir(parents=True)
    (root / "etc/default/kdump-tools").write_text("KDUMP_COREDIR=/srv/dumps\n")
    out = tmp_path / "gen"
    done = _generate(root, out, REPO)
    assert done.returncode == 0, done.stderr
    assert "RequiresMountsFor=/srv/dumps\n" in (out / DROP_IN).read_text()


def test_usage_without_a_directory(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/vmcore").write_bytes(b"\x7fELF")
    done = _run(root, REPO)
    assert done.returncode == 2 and "usage: kdumpd-dump-generator" in done.stderr
