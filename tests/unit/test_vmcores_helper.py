"""The pure parts of tests/vmcores.py, the generator of test vmcores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import vmcores


def test_depends_on_picks_the_versioned_image() -> None:
    text = "linux-image-amd64\n  Depends: linux-image-6.12.117+deb13-amd64\n  Depends: x\n"
    assert vmcores._depends_on(text) == "linux-image-6.12.117+deb13-amd64"
    assert vmcores._depends_on("linux-image-amd64\n  Recommends: firmware\n") is None
    assert vmcores._depends_on("") is None


def test_apt_options_keep_every_apt_path_private(tmp_path: Path) -> None:
    opts = vmcores._apt_options(tmp_path)
    values = dict(o.split("=", 1) for o in opts if o != "-o")
    assert values["Dir::Etc::SourceParts"] == "/dev/null"
    for key in ("Dir::Etc::SourceList", "Dir::State::Lists", "Dir::Cache", "Dir::Cache::Archives"):
        assert values[key].startswith(str(tmp_path))


def test_a_result_is_current_only_with_its_own_spec(tmp_path: Path) -> None:
    spec = vmcores.SPECS["deb13-6.12-thp"]
    assert not vmcores._is_current(spec, tmp_path)  # no spec.json: an unfinished build
    (tmp_path / "spec.json").write_text('{"suite": "trixie", "env": {}}')
    assert not vmcores._is_current(spec, tmp_path)
    (tmp_path / "spec.json").write_text(json.dumps(spec.as_json()))
    assert vmcores._is_current(spec, tmp_path)


def test_bench_inputs_are_not_test_inputs() -> None:
    assert not set(vmcores.SPECS) & set(vmcores.BENCH_SPECS)
    assert all(s.env.get("MEM", "").endswith("G") for s in vmcores.BENCH_SPECS.values())


def test_unknown_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        vmcores.main(["no-such-vmcore"])
    assert exit_info.value.code == 2
    assert "unknown vmcore name(s): no-such-vmcore" in capsys.readouterr().err
