"""kdumpd-capture's command line on small synthetic ELF vmcores (no fixture needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from vmcore_synth import Seg, build, default_notes, expected_byte

from kdumpd.cli.capture import main
from kdumpd.dumpfile.kdump_reader import KdumpSource

PAGE = 4096


@pytest.fixture
def vmcore(tmp_path: Path) -> Path:
    path = tmp_path / "vmcore"
    path.write_bytes(build([Seg(0x1000, 40 * PAGE), Seg(0x100000, 64 * PAGE)]))
    return path


def test_a_level_vmcoreinfo_cannot_decide_is_dropped_with_a_warning(
    vmcore: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dump"
    assert main(["-d", "31", str(vmcore), str(out)]) == 0
    err = capsys.readouterr().err
    # the synthetic VMCOREINFO has no mem_section: only zero pages can be excluded
    assert "warning: -d 31: free pages cannot be told apart" in err
    with KdumpSource(str(out)) as dump:
        data = dump.read_pages(0x100, 64)
    assert data == bytes(expected_byte(0x100000 + i) for i in range(64 * PAGE))


def test_existing_output_needs_f(
    vmcore: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dump"
    out.write_text("keep me")
    assert main(["-d", "1", str(vmcore), str(out)]) == 2
    assert "already exists (use -f to overwrite)" in capsys.readouterr().err
    assert out.read_text() == "keep me"
    assert main(["-f", "-d", "1", "--message-level", "0", str(vmcore), str(out)]) == 0


def test_vmcore_without_vmcoreinfo_is_still_copied(tmp_path: Path) -> None:
    path = tmp_path / "vmcore"
    path.write_bytes(build([Seg(0, 8 * PAGE)], notes=default_notes(vmcoreinfo=None)))
    out = tmp_path / "dump"
    assert main(["-d", "0", "--message-level", "0", str(path), str(out)]) == 0
    with KdumpSource(str(out)) as dump:
        assert dump.vmcoreinfo_raw is None
        assert dump.header.utsname.sysname == "Linux"
        assert dump.read_pages(0, 8) == bytes(expected_byte(i) for i in range(8 * PAGE))
