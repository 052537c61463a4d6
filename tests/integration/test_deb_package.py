"""The Debian package: build-deb.sh builds it, lintian finds no error or warning, it has the files.

Builds kdumpd_<version>_all.deb once per session with the real dpkg-buildpackage (debhelper,
dh-python, pybuild's pyproject plugin) and inspects it with dpkg-deb and lintian. Installing it
on a booted Debian system is tests/system's job.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

SYSTEM_PATH = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def _run(*cmd: str) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=SYSTEM_PATH)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def deb(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    path = Path(_run("bash", str(repo / "packaging/build-deb.sh"), str(out)).splitlines()[-1])
    assert (
        path.name
        == "kdumpd_"
        + _run(
            "dpkg-parsechangelog", "-l", str(repo / "packaging/debian/changelog"), "-S", "Version"
        ).strip()
        + "_all.deb"
    )
    return path


@pytest.fixture(scope="module")
def contents(deb: Path) -> dict[str, str]:
    """Path (without the leading ".") -> permission string, from dpkg-deb --contents."""
    listing = {}
    for line in _run("dpkg-deb", "--contents", str(deb)).splitlines():
        fields = line.split()
        listing[fields[5].removeprefix(".").rstrip("/") or "/"] = fields[0]
    return listing


def field(deb: Path, name: str) -> str:
    return _run("dpkg-deb", "--field", str(deb), name).strip()


def test_lintian_reports_no_error_and_no_warning(deb: Path) -> None:
    # Tags overridden in packaging/debian/kdumpd.lintian-overrides (each with its reason there)
    # are not shown and do not count; any other error or warning fails (exit 2 with --fail-on).
    # Not --show-overrides: with it lintian 2.116 counts the overridden tags for --fail-on too.
    done = subprocess.run(
        [
            "lintian",
            "--pedantic",
            "--display-info",
            "--tag-display-limit=0",
            "--fail-on=error,warning",
            str(deb),
        ],
        capture_output=True,
        text=True,
        check=False,
        env=SYSTEM_PATH,
    )
    tags = done.stdout.splitlines()
    print("\n".join(tags))  # info and pedantic tags are listed in the test output
    # An override that no longer matches (the unit changed) must go, not linger as an info tag.
    stale = (["unused-override"], ["mismatched-override"])  # "X: kdumpd: TAG ..."
    bad = [t for t in tags if t.startswith(("E:", "W:")) or t.split()[2:3] in stale]
    assert not bad, "\n".join(bad)
    assert done.returncode == 0, done.stderr


def test_manual_pages_are_found_by_name(deb: Path, tmp_path: Path) -> None:
    """``man kdump-config`` works once installed: man finds each page in the package's tree."""
    _run("dpkg-deb", "--extract", str(deb), str(tmp_path))
    manpath = str(tmp_path / "usr/share/man")
    for name in ("kdump-config", "kdumpd", "kdumpd-capture"):
        found = _run("man", "-M", manpath, "-w", name).strip()
        assert found == f"{manpath}/man8/{name}.8.gz"
        done = subprocess.run(
            ["man", "-M", manpath, "--warnings", "-E", "UTF-8", "-Tutf8", name],
            capture_output=True,
            text=True,
            check=False,
            env={**SYSTEM_PATH, "MANWIDTH": "80"},
        )
        assert done.returncode == 0 and not done.stderr, done.stderr
        assert done.stdout.startswith(f"{name.upper()}(8)"), done.stdout[:200]


@pytest.mark.parametrize(
    "path",
    [
        "/usr/sbin/kdump-config",
        "/usr/sbin/kdumpd",
        "/usr/sbin/kdumpd-capture",
        "/usr/lib/python3/dist-packages/kdumpd/__init__.py",
        "/lib/systemd/system/kdump-tools.service",
        "/lib/systemd/system/kdump-tools-dump.service",
        "/lib/systemd/system/kdumpd.service",
        "/lib/systemd/system/kdumpd-meminfo.service",
        "/lib/systemd/system/kdumpd-initrd.service",
        "/usr/share/dbus-1/system.d/org.kdumpd.Kdump1.conf",
        "/usr/share/dbus-1/system-services/org.kdumpd.Kdump1.service",
        "/usr/share/dbus-1/interfaces/org.kdumpd.Kdump1.Manager.xml",
        "/usr/share/dbus-1/interfaces/org.kdumpd.Kdump1.Dump.xml",
        "/usr/share/polkit-1/actions/org.kdumpd.kdump1.policy",
        "/usr/share/kdumpd/kdump-tools.conf",
        "/usr/share/kdumpd/capture-initrd",
        "/lib/systemd/system-generators/kdumpd-dump-generator",
        "/etc/default/grub.d/kdump-tools.cfg",
        "/etc/kdump/sysctl.conf",
        "/etc/kernel/postinst.d/kdump-tools",
        "/etc/kernel/postrm.d/kdump-tools",
        "/var/lib/kdump",
        "/var/crash",
        "/usr/share/man/man8/kdump-config.8.gz",
        "/usr/share/man/man8/kdumpd.8.gz",
        "/usr/share/man/man8/kdumpd-capture.8.gz",
        "/usr/share/lintian/overrides/kdumpd",
    ],
)
def test_package_holds(contents: dict[str, str], path: str) -> None:
    assert path in contents


def test_scripts_and_hooks_are_executable(contents: dict[str, str]) -> None:
    for path in (
        "/usr/sbin/kdump-config",
        "/usr/share/kdumpd/capture-initrd",
        "/etc/kernel/postinst.d/kdump-tools",
        "/etc/kernel/postrm.d/kdump-tools",
        "/lib/systemd/system-generators/kdumpd-dump-generator",
    ):
        assert contents[path].startswith("-rwxr-xr-x"), (path, contents[path])


@pytest.mark.parametrize(
    "script",
    ["capture-initrd", "kernel/postinst.d/kdump-tools", "kernel/postrm.d/kdump-tools", "demo.sh"],
)
def test_shell_scripts_parse(repo: Path, script: str) -> None:
    shell = "bash" if script.endswith(".sh") else "sh"
    _run(shell, "-n", str(repo / "packaging" / script))


def test_replaces_kdump_tools_and_depends_on_debian_packages(deb: Path) -> None:
    depends = {re.split(r"[ (]", d.strip())[0] for d in field(deb, "Depends").split(",")}
    assert {
        "python3-dbus-fast",
        "python3-pystemd",
        "python3-zstandard",
        "python3-numpy",
        "python3-lzo",
        "kexec-tools",
        "initramfs-tools",
        "dbus",
        "polkitd",
        "ucf",
    } <= depends
    for name in ("Conflicts", "Replaces", "Provides"):
        assert field(deb, name) == "kdump-tools", name
    assert field(deb, "Architecture") == "all"


def test_conffiles_and_enabled_units(deb: Path, tmp_path: Path) -> None:
    _run("dpkg-deb", "--control", str(deb), str(tmp_path))
    conffiles = (tmp_path / "conffiles").read_text().split()
    assert sorted(conffiles) == [
        "/etc/default/grub.d/kdump-tools.cfg",
        "/etc/kdump/sysctl.conf",
        "/etc/kernel/postinst.d/kdump-tools",
        "/etc/kernel/postrm.d/kdump-tools",
    ]
    # /etc/default/kdump-tools is not a dpkg conffile: ucf manages it so that the debconf answer
    # can be written into it while the administrator's edits are kept.
    postinst = (tmp_path / "postinst").read_text()
    assert "ucf --debconf-ok" in postinst
    assert "deb-systemd-helper enable 'kdump-tools.service'" in postinst
    assert "deb-systemd-invoke $_dh_action 'kdump-tools.service'" in postinst
    # The early-boot memory snapshot runs at boot only: enabled, not started by the install.
    assert "deb-systemd-helper enable 'kdumpd-meminfo.service'" in postinst
    assert "deb-systemd-invoke $_dh_action 'kdumpd-meminfo.service'" not in postinst
    # kdumpd.service is started by the bus; kdump-tools-dump.service only in the capture boot.
    assert "deb-systemd-invoke $_dh_action 'kdumpd.service'" not in postinst
    assert "deb-systemd-invoke $_dh_action 'kdump-tools-dump.service'" not in postinst
    # kdump-tools.service pulls in the initrd build when it is missing.
    assert "deb-systemd-invoke $_dh_action 'kdumpd-initrd.service'" not in postinst
    templates = (tmp_path / "templates").read_text()
    assert "Template: kdumpd/use_kdump" in templates
    assert "Should kdump be enabled by default?" in templates
    postrm = (tmp_path / "postrm").read_text()
    assert "rm -rf /var/lib/kdump" in postrm and "db_purge" in postrm
    for script in ("config", "postinst", "postrm", "preinst", "prerm"):
        if (tmp_path / script).exists():
            _run("sh", "-n", str(tmp_path / script))


def test_grub_snippet_reserves_kdump_tools_default(repo: Path) -> None:
    text = (repo / "packaging/grub.d/kdump-tools.cfg").read_text()
    assert re.search(r'^GRUB_CMDLINE_LINUX_DEFAULT=".*crashkernel=512M-:192M"$', text, re.M)
