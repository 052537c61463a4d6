from pathlib import Path

import pytest

from kdumpd.errors import SystemReadError
from kdumpd.system import SystemRoot


def test_paths_are_mapped_under_the_root(tmp_path: Path) -> None:
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("root=/dev/vda1 crashkernel=512M\n")
    root = SystemRoot(tmp_path)
    assert root.path("/proc/cmdline") == tmp_path / "proc/cmdline"
    assert root.read_text("/proc/cmdline") == "root=/dev/vda1 crashkernel=512M\n"
    assert root.read_text("/proc/missing") is None


def test_read_int_names_the_file_on_garbage(tmp_path: Path) -> None:
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/kernel/kexec_crash_size").write_text("lots\n")
    with pytest.raises(SystemReadError, match=r"/sys/kernel/kexec_crash_size.*'lots'"):
        SystemRoot(tmp_path).read_int("/sys/kernel/kexec_crash_size")


def test_relative_paths_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SystemRoot(tmp_path).path("proc/cmdline")


def test_root_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KDUMPD_ROOT", str(tmp_path))
    assert SystemRoot.from_env().base == tmp_path
    assert SystemRoot.from_env("/mnt").base == Path("/mnt")
