"""Static checks of what the D-Bus service ships: units, bus policy, activation, polkit, XML."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from kdumpd.service import names

UNITS = ("kdumpd.service", "kdump-tools.service")


def test_bus_files_are_well_formed_xml(repo: Path) -> None:
    files = sorted(
        str(p) for p in (repo / "dbus").iterdir() if p.suffix in (".xml", ".conf", ".policy")
    )
    assert len(files) == 4
    done = subprocess.run(["xmllint", "--noout", *files], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_policy_declares_every_action_the_daemon_checks(repo: Path) -> None:
    text = (repo / "dbus/org.kdumpd.kdump1.policy").read_text()
    declared = set(re.findall(r'<action id="([^"]+)"', text))
    assert declared == {a.value for a in names.Action}


def test_activation_file_names_the_unit(repo: Path) -> None:
    text = (repo / "dbus/org.kdumpd.Kdump1.service").read_text()
    assert f"Name={names.BUS_NAME}\n" in text
    assert f"SystemdService={names.DAEMON_UNIT}\n" in text
    unit = (repo / "units" / names.DAEMON_UNIT).read_text()
    assert f"BusName={names.BUS_NAME}\n" in unit and "Type=dbus\n" in unit


def _installed_copy(repo: Path, tmp_path: Path, unit: str) -> Path:
    """The unit with /usr/sbin (where the package installs) pointed at this checkout's venv."""
    text = (repo / "units" / unit).read_text().replace("/usr/sbin/", f"{repo}/.venv/bin/")
    out = tmp_path / unit
    out.write_text(text)
    return out


@pytest.mark.parametrize("unit", UNITS)
def test_units_verify(repo: Path, tmp_path: Path, unit: str) -> None:
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(_installed_copy(repo, tmp_path, unit))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_units_exposure_at_most_3(repo: Path, unit: str) -> None:
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(repo / "units" / unit)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", done.stdout)
    assert match, done.stdout[-500:] + done.stderr
    assert float(match.group(1)) <= 3.0
