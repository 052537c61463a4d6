"""The manual pages in packaging/man: they render cleanly and document what the code really has.

Every option a page names must exist, and (for each command's own option list) every option the
program takes must be on its page: kdump-config's subcommands and their options are probed by
running each subcommand with each documented option on an empty machine root; kdumpd-capture's
and kdumpd's come from their argument parsers; kdumpd's bus members, errors and polkit actions
from dbus/*.xml, kdumpd.service.names and the polkit policy.
"""

from __future__ import annotations

import re
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from manpage_roff import options, plain, plain_hyphen_options, sections, tags

from kdumpd.arming import PANIC_ON_OOPS_VARIABLE
from kdumpd.cli import capture, kdump_config
from kdumpd.cli.context import EXIT_USAGE
from kdumpd.config import KNOWN
from kdumpd.dumpfile.makedump_args import build_parser
from kdumpd.errors import KdumpdError, UsageError
from kdumpd.service import daemon
from kdumpd.service.names import Error

PAGES = ("kdump-config", "kdumpd", "kdumpd-capture")
SYSTEM_PATH = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}
_HELP_OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")


@pytest.fixture(scope="module")
def man_dir(repo: Path) -> Path:
    return repo / "packaging/man"


def source(man_dir: Path, name: str) -> str:
    return (man_dir / f"{name}.8").read_text()


def help_options(
    main: Callable[[list[str]], object], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> set[str]:
    """The options an argparse program lists in its --help output."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
    return set(_HELP_OPTION.findall(capsys.readouterr().out))


# --- every page ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAGES)
def test_renders_without_warnings(man_dir: Path, name: str) -> None:
    page = str(man_dir / f"{name}.8")
    for cmd in (
        ["groff", "-man", "-Tutf8", "-ww", "-z", page],
        ["mandoc", "-Tlint", "-W", "style", page],
        # lintian's own check (manpage-has-errors-from-man)
        ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", page],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=SYSTEM_PATH)
        assert done.returncode == 0 and not done.stderr, (cmd, done.stderr)
        if cmd[0] == "mandoc":
            assert not done.stdout, done.stdout


@pytest.mark.parametrize("name", PAGES)
def test_header_and_name(repo: Path, man_dir: Path, name: str) -> None:
    text = source(man_dir, name)
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    header = next(line for line in text.splitlines() if line.startswith(".TH "))
    title = re.escape(name.upper().replace("-", "\\-"))
    assert re.fullmatch(rf'\.TH {title} 8 \d{{4}}-\d\d-\d\d "kdumpd {version}" .+', header), header
    assert plain(sections(text)["NAME"][0]).startswith(f"{name} - ")
    assert not plain_hyphen_options(text)  # an option must be \-x: groff prints - as a hyphen


def test_the_package_installs_every_page(repo: Path, man_dir: Path) -> None:
    listed = (repo / "packaging/debian/kdumpd.manpages").read_text().split()
    assert sorted(listed) == sorted(f"packaging/man/{p}.8" for p in PAGES)
    assert sorted(p.name for p in man_dir.iterdir()) == sorted(f"{p}.8" for p in PAGES)


# --- kdump-config ------------------------------------------------------------------------------


def subcommand_entries(text: str) -> dict[str, dict[str, bool]]:
    """Subcommand -> {option: whether a value follows it}, from the SUBCOMMANDS tag lines."""
    entries = {}
    for tag in tags(sections(text)["SUBCOMMANDS"]):
        words = tag.replace("[", " ").replace("]", " ").split()
        entries[words[0]] = {
            w: i + 1 < len(words) and words[i + 1].isupper()
            for i, w in enumerate(words)
            if w.startswith("-")
        }
    return entries


def accepts(root: Path, command: str, option: str, value: bool) -> bool:
    """Whether ``kdump-config --root ROOT COMMAND OPTION`` gets past its argument checks."""
    argv = ["--root", str(root), command, option] + (["/proc/vmcore"] if value else [])
    try:
        # On an empty root no configuration exists, so a usage exit can only mean bad usage.
        return kdump_config.run(argv) != EXIT_USAGE
    except SystemExit as done:  # argparse's --help
        return done.code == 0
    except UsageError:
        return False
    except KdumpdError:  # failed later, at work (no SSH target, no kernel …): the option passed
        return True


@pytest.fixture
def empty_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Nothing may reach this machine's kernel or bus: a simulated kexec, a bus that is not there.
    monkeypatch.setenv("KDUMPD_KEXEC_SIMULATE", "1")
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    monkeypatch.delenv("KDUMPD_ROOT", raising=False)
    root = tmp_path / "root"
    root.mkdir()
    return root


def test_kdump_config_lists_every_subcommand(man_dir: Path) -> None:
    text = source(man_dir, "kdump-config")
    assert set(subcommand_entries(text)) == set(kdump_config.BY_NAME)
    body = sections(text)["SUBCOMMANDS"]
    words = set(re.findall(r"[\w-]+", " ".join(plain(line) for line in body)))
    assert set(kdump_config.ALIASES) <= words | options(body)


def test_kdump_config_subcommand_options_match_what_each_accepts(
    man_dir: Path, empty_root: Path
) -> None:
    entries = subcommand_entries(source(man_dir, "kdump-config"))
    candidates = {o: v for opts in entries.values() for o, v in opts.items()}
    candidates["--no-such-option"] = False  # refused everywhere: proves the probe can say no
    found = {
        name: {o for o, v in candidates.items() if accepts(empty_root, name, o, v)}
        for name in entries
        if name != "help"  # help prints the usage whatever follows it
    }
    documented = {name: set(opts) for name, opts in entries.items() if name != "help"}
    assert found == documented


def test_kdump_config_global_options(man_dir: Path) -> None:
    text = source(man_dir, "kdump-config")
    usage = set(_HELP_OPTION.findall(kdump_config.usage("kdump-config")))
    assert options(sections(text)["OPTIONS"]) == usage == {"--root", "--json"}
    assert kdump_config.parse_globals(["--root", "/x", "--json", "show"]) == ("/x", True, ["show"])


def test_kdump_config_names_no_other_option(man_dir: Path) -> None:
    text = source(man_dir, "kdump-config")
    parts = sections(text)
    known = options(parts["OPTIONS"]) | {
        o for opts in subcommand_entries(text).values() for o in opts
    }
    known |= {a for a in kdump_config.ALIASES if a.startswith("-")}
    for title, lines in parts.items():
        if title != "CONFIGURATION":
            assert options(lines) <= known, title
    # MAKEDUMP_ARGS takes kdumpd-capture's options.
    capture_opts = {s for a in build_parser()._actions for s in a.option_strings}
    assert options(parts["CONFIGURATION"]) <= capture_opts


def test_kdump_config_lists_every_variable(man_dir: Path) -> None:
    names = {
        n
        for tag in tags(sections(source(man_dir, "kdump-config"))["CONFIGURATION"])
        for n in tag.split(", ")
    }
    assert names == set(KNOWN) | {PANIC_ON_OOPS_VARIABLE}


# --- kdumpd-capture ----------------------------------------------------------------------------


def test_kdumpd_capture_options_match_its_parsers(
    man_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = sections(source(man_dir, "kdumpd-capture"))
    parser = {s for a in build_parser()._actions for s in a.option_strings}  # hidden ones too
    savecore = help_options(capture.main, ["savecore", "--help"], capsys)
    assert options(parts["OPTIONS"]) == parser
    assert options(parts["SAVECORE"]) == savecore
    for title, lines in parts.items():
        assert options(lines) <= parser | savecore, title


# --- kdumpd ------------------------------------------------------------------------------------


def test_kdumpd_options_match_its_parser(man_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parts = sections(source(man_dir, "kdumpd"))
    parser = help_options(daemon.main, ["--help"], capsys)
    assert options(parts["OPTIONS"]) == parser
    for title, lines in parts.items():
        assert options(lines) <= parser, title


def _signature(tag: str) -> tuple[str, str, str]:
    """``Name(a{sv} x, s y) → s`` -> (name, "a{sv}s", "s")."""
    match = re.fullmatch(r"(\w+)\((.*)\)(?: → (\S+))?", tag)
    assert match, tag
    args = "".join(a.split()[0] for a in match[2].split(",") if a.strip())
    return match[1], args, match[3] or ""


def _xml_members(repo: Path, iface: str) -> tuple[dict[str, tuple[str, str]], dict[str, str]]:
    """Methods (name -> in and out signatures) and properties (name -> type) of the XML."""
    node = ET.parse(repo / f"dbus/{iface}.xml").getroot().find(f"interface[@name='{iface}']")
    assert node is not None

    def args(method: ET.Element, direction: str) -> str:
        # a method argument without a direction is an input (D-Bus introspection format)
        return "".join(
            a.get("type", "") for a in method.iter("arg") if a.get("direction", "in") == direction
        )

    methods = {m.get("name", ""): (args(m, "in"), args(m, "out")) for m in node.iter("method")}
    props = {p.get("name", ""): p.get("type", "") for p in node.iter("property")}
    return methods, props


@pytest.mark.parametrize("short", ["Manager", "Dump"])
def test_kdumpd_documents_every_bus_member(repo: Path, man_dir: Path, short: str) -> None:
    parts = sections(sections(source(man_dir, "kdumpd"))["D-BUS INTERFACE"], ".SS")
    methods, props = _xml_members(repo, f"org.kdumpd.Kdump1.{short}")
    documented = [_signature(t) for t in tags(parts[f"{short} methods"])]
    assert {name: (i, o) for name, i, o in documented} == methods
    assert dict(t.split() for t in tags(parts[f"{short} properties"])) == props


def test_kdumpd_lists_every_error(man_dir: Path) -> None:
    text = " ".join(
        plain(line)
        for line in sections(sections(source(man_dir, "kdumpd"))["D-BUS INTERFACE"], ".SS")[
            "Errors"
        ]
    )
    full = set(re.findall(r"org\.[\w.]+?\.Error\.\w+", text))
    short = {"org.kdumpd.Kdump1.Error." + n for n in re.findall(r"(?<![\w.])\.([A-Z]\w+)", text)}
    assert full | short == {e.value for e in Error}


def test_kdumpd_lists_every_polkit_action(repo: Path, man_dir: Path) -> None:
    policy = ET.parse(repo / "dbus/org.kdumpd.kdump1.policy").getroot()
    ids = {a.get("id") for a in policy.findall("action")}
    assert set(tags(sections(source(man_dir, "kdumpd"))["AUTHORIZATION"])) == ids


def test_units_point_to_these_pages(repo: Path) -> None:
    """``systemctl help UNIT`` opens a page the package installs, the unit's own one first."""
    units = sorted((repo / "units").glob("*.service"))
    refs = {u.name: re.findall(r"man:([\w-]+)\(8\)", u.read_text()) for u in units}
    assert refs == {
        "kdump-tools-dump.service": ["kdumpd-capture", "kdump-config"],
        "kdump-tools.service": ["kdump-config"],
        "kdumpd-meminfo.service": ["kdump-config"],
        "kdumpd-initrd.service": ["kdump-config"],
        "kdumpd.service": ["kdumpd", "kdump-config"],
    }
    assert {name for names in refs.values() for name in names} == set(PAGES)
