"""/etc/default/kdump-tools: shell-free parsing, validation, write-back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kdumpd.config import (
    DEFAULT_CMDLINE_APPEND,
    VARIABLES,
    Config,
    NfsTarget,
    SshTarget,
    load_config,
    parse_config,
)
from kdumpd.config_syntax import parse_assignments
from kdumpd.config_write import quote_value, update_config_text, write_config
from kdumpd.errors import ConfigError
from kdumpd.system import SystemRoot

DATA = Path(__file__).resolve().parent.parent / "data"
SHIPPED = ["kdump-tools-1.8.1.conf", "kdump-tools-1.10.7.conf"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_file_parses_exactly(name: str) -> None:
    text = (DATA / name).read_text()
    assignments = parse_assignments(text, name)
    assert [(a.name, a.value, a.first_line) for a in assignments] == [
        ("USE_KDUMP", "1", 7),
        ("KDUMP_KERNEL", "/var/lib/kdump/vmlinuz", 17),
        ("KDUMP_INITRD", "/var/lib/kdump/initrd.img", 18),
        ("KDUMP_COREDIR", "/var/crash", 37),
    ]
    config = parse_config(text, name)
    assert config == Config(
        path=name,
        use_kdump=True,
        kernel="/var/lib/kdump/vmlinuz",
        initrd="/var/lib/kdump/initrd.img",
    )
    assert config.dump_level == 31
    assert config.target == "local"
    assert config.value("MAKEDUMP_ARGS") == "-F -c -d 31"
    assert config.value("KDUMP_CMDLINE_APPEND") == DEFAULT_CMDLINE_APPEND
    assert [k for k, _ in config.values] == [v.name for v in VARIABLES]


def test_our_shipped_file_asks_for_zstd_pages() -> None:
    """The package's /etc/default/kdump-tools: kdump-tools' defaults except the page codec."""
    from kdumpd.savecore.engine import capture_options

    path = Path(__file__).resolve().parents[2] / "packaging" / "kdump-tools.conf"
    config = parse_config(path.read_text(), str(path))
    options = capture_options(config.makedump_args, config.path)
    assert (options.compression, options.dump_level) == ("zstd", 31)
    assert parse_config("").value("MAKEDUMP_ARGS") == "-F -c -d 31"  # unset: zlib, as before


def test_every_variable_has_its_kdump_tools_default() -> None:
    config = parse_config("")
    assert dict(config.values) == {
        "USE_KDUMP": "",
        "KDUMP_KERNEL": "",
        "KDUMP_INITRD": "",
        "KDUMP_COREDIR": "/var/crash",
        "KDUMP_FAIL_CMD": "",
        "KDUMP_DUMP_DMESG": "1",
        "KDUMP_NUM_DUMPS": "0",
        "KDUMP_COMPRESSION": "",
        "MAKEDUMP_ARGS": "-F -c -d 31",
        "KDUMP_KEXEC_ARGS": "",
        "KDUMP_CMDLINE": "",
        "KDUMP_CMDLINE_APPEND": DEFAULT_CMDLINE_APPEND,
        "SSH": "",
        "SSH_KEY": "/root/.ssh/kdump_id_rsa",
        "HOSTTAG": "ip",
        "NFS": "",
        "NFS_TIMEO": "600",
        "NFS_RETRANS": "3",
        "NFS_MOUNT_RETRY": "4",
        "SSH_KDUMP_RETRY": "16",
        "FTP": "",
        "FTP_USER": "",
        "FTP_PASSWORD": "",
        "FTP_PORT": "21",
    }
    assert not config.use_kdump  # unset USE_KDUMP: kdump-tools' "not set or zero"


def test_shell_forms() -> None:
    text = (
        "# comment\n"
        "export KDUMP_COREDIR='/srv/crash'   # trailing comment\n"
        'BASE="nr_cpus=1"\n'
        'KDUMP_CMDLINE_APPEND="$BASE ${BASE} ${UNSET:-dflt} \\"q\\" \\$x"\n'
        "KDUMP_CMDLINE_APPEND+=' irqpoll'\n"
        "KDUMP_KEXEC_ARGS=--elf64-core-headers\\ x\n"
        'NOTE="two\n  lines"\n'
        "export SSH\n"
        "SSH=kdump@backup.example.org\n"
        "NFS=nas:/export/crash\n"
        "MAKEDUMP_ARGS='-l -d31'\n"
        "\n"
    )
    config = parse_config(text, "f")
    assert config.coredir == "/srv/crash"
    assert config.cmdline_append == 'nr_cpus=1 nr_cpus=1 dflt "q" $x irqpoll'
    assert config.kexec_args == ("--elf64-core-headers", "x")
    assert config.ssh == SshTarget("kdump", "backup.example.org")
    assert config.nfs == NfsTarget("nas", "/export/crash")
    assert config.dump_level == 31
    assert config.target == "ssh"
    assert dict(config.unknown) == {"BASE": "nr_cpus=1", "NOTE": "two\n  lines"}
    lines = {a.name: (a.first_line, a.last_line) for a in parse_assignments(text, "f")}
    assert lines["NOTE"] == (7, 8)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("USE_KDUMP=maybe", "f:1: USE_KDUMP: expected 0 or 1, found 'maybe'"),
        ("\nSSH=backup", "f:2: SSH: expected user@host, found 'backup'"),
        ("SSH='root@host;reboot'", "f:1: SSH: shell metacharacter or space in a host name"),
        ("SSH='ro ot@host'", "f:1: SSH: shell metacharacter or invalid character in the user"),
        ("NFS=nas", "f:1: NFS: expected host:/path, found 'nas'"),
        ("NFS=nas:export", "f:1: NFS: expected host:/path, found 'nas:export'"),
        ("NFS='nas:/x;rm'", "f:1: NFS: shell metacharacter or space in a path"),
        ("KDUMP_COREDIR=var/crash", "f:1: KDUMP_COREDIR: expected an absolute path"),
        ("KDUMP_COREDIR='/var/crash dir'", "f:1: KDUMP_COREDIR: shell metacharacter or space"),
        ('MAKEDUMP_ARGS="-c -d 32"', "f:1: MAKEDUMP_ARGS: dump level -d 32 is outside 0..31"),
        ('MAKEDUMP_ARGS="-c -d"', "f:1: MAKEDUMP_ARGS: dump level -d  is outside 0..31"),
        ('MAKEDUMP_ARGS="-c -d31; reboot"', "f:1: MAKEDUMP_ARGS: shell operator"),
        ("HOSTTAG=fqdn", "f:1: HOSTTAG: expected ip or hostname, found 'fqdn'"),
        ("KDUMP_COMPRESSION=zip", "f:1: KDUMP_COMPRESSION: expected bzip2 or gzip or lz4 or xz"),
        ("NFS_TIMEO=0", "f:1: NFS_TIMEO: expected a number >= 1, found '0'"),
        ("FTP_PORT=70000", "f:1: FTP_PORT: expected a number 1..65535, found '70000'"),
        ("KDUMP_NUM_DUMPS=-1", "f:1: KDUMP_NUM_DUMPS: expected a whole number, found '-1'"),
        ("KDUMP_DUMP_DMESG=yes", "f:1: KDUMP_DUMP_DMESG: expected 0 or 1, found 'yes'"),
        ("KDUMP_KERNEL=$(uname -r)", "f:1: KDUMP_KERNEL: command substitution $(…) is not"),
        ("KDUMP_KERNEL=`uname -r`", "f:1: KDUMP_KERNEL: command substitution (`…`) is not"),
        ("A=1; B=2", "f:1: A: shell operator ';' is not supported in a value"),
        ("USE_KDUMP=1 0", "f:1: USE_KDUMP: more than one word after '='"),
        ('X="open', "f:1: X: unterminated double quote"),
        ("\n\nif true; then", "f:3: cannot understand 'if true; then'"),
        ("X=$1", "f:1: X: special parameter $1 is not supported"),
        ("X=${Y:+z}", "f:1: X: unsupported expansion ${Y:+z}"),
    ],
)
def test_bad_input_is_one_line_naming_file_line_variable(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(text, "f")
    assert str(exc.value).startswith(message)
    assert "\n" not in str(exc.value)


def test_use_kdump_follows_the_init_script_test() -> None:
    assert parse_config("USE_KDUMP=0").use_kdump is False
    assert parse_config("USE_KDUMP=2").use_kdump is True  # [ 2 -ne 0 ]
    assert parse_config("USE_KDUMP=").use_kdump is False


def test_ipv6_hosts() -> None:
    config = parse_config("SSH=root@[fd00::1]\nNFS=[fd00::2]:/crash\n")
    assert config.ssh == SshTarget("root", "fd00::1")
    assert config.nfs == NfsTarget("fd00::2", "/crash")
    assert str(config.nfs) == "[fd00::2]:/crash"


# -- write-back -------------------------------------------------------------------------------


def test_update_keeps_comments_and_places_new_values_at_their_template() -> None:
    text = (DATA / "kdump-tools-1.10.7.conf").read_text()
    new = update_config_text(text, {"USE_KDUMP": "0", "NFS": "nas:/crash", "SSH": None})
    old_lines, new_lines = text.splitlines(), new.splitlines()
    assert [line for line in new_lines if line not in old_lines] == [
        "USE_KDUMP=0",
        "NFS=nas:/crash",
    ]
    assert [line for line in old_lines if line not in new_lines] == ["USE_KDUMP=1"]
    assert new_lines[new_lines.index('#NFS="<nfs mount>"') + 1] == "NFS=nas:/crash"
    config = parse_config(new)
    assert (config.use_kdump, config.nfs) == (False, NfsTarget("nas", "/crash"))


def test_update_rewrites_first_assignment_drops_overrides_and_removes() -> None:
    text = '# head\nexport KDUMP_COREDIR=/a\nX=1\nKDUMP_COREDIR="/b\nc"\nKDUMP_NUM_DUMPS=3\n'
    new = update_config_text(text, {"KDUMP_COREDIR": "/srv/crash", "KDUMP_NUM_DUMPS": None})
    assert new == "# head\nexport KDUMP_COREDIR=/srv/crash\nX=1\n"
    assert update_config_text("A=1", {"USE_KDUMP": "1"}) == "A=1\nUSE_KDUMP=1\n"


@pytest.mark.parametrize("value", ["plain", "a b", 'q"uote', "$HOME", "back\\slash", "`x`", ""])
def test_quote_value_round_trips(value: str) -> None:
    text = f"KDUMP_FAIL_CMD={quote_value(value)}\n"
    assert parse_assignments(text, "f")[0].value == value


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"SSH": "backup"}, "/etc/default/kdump-tools: SSH: expected user@host"),
        ({"NOT_A_VAR": "1"}, "/etc/default/kdump-tools: NOT_A_VAR: not a kdump-tools variable"),
        ({"KDUMP_FAIL_CMD": "a\nb"}, "/etc/default/kdump-tools: KDUMP_FAIL_CMD: newline or NUL"),
    ],
)
def test_invalid_change_is_refused_and_file_untouched(
    tmp_path: Path, changes: dict[str, str | None], message: str
) -> None:
    path = tmp_path / "etc/default/kdump-tools"
    path.parent.mkdir(parents=True)
    path.write_text("USE_KDUMP=1\n")
    with pytest.raises(ConfigError, match=message):
        write_config(SystemRoot(tmp_path), changes)
    assert path.read_text() == "USE_KDUMP=1\n"
    assert os.listdir(path.parent) == ["kdump-tools"]  # no temporary file left behind


def test_write_config_is_atomic_and_keeps_mode(tmp_path: Path) -> None:
    path = tmp_path / "etc/default/kdump-tools"
    path.parent.mkdir(parents=True)
    path.write_text((DATA / "kdump-tools-1.8.1.conf").read_text())
    path.chmod(0o640)
    inode = path.stat().st_ino
    config = write_config(SystemRoot(tmp_path), {"SSH": "kdump@backup", "SSH_KEY": "/root/k"})
    assert config.ssh == SshTarget("kdump", "backup")
    assert load_config(SystemRoot(tmp_path)) == config
    assert path.stat().st_mode & 0o777 == 0o640
    assert path.stat().st_ino != inode  # replaced by rename, not rewritten in place
    assert os.listdir(path.parent) == ["kdump-tools"]


def test_write_config_creates_missing_file(tmp_path: Path) -> None:
    config = write_config(SystemRoot(tmp_path), {"USE_KDUMP": "1"})
    assert config.use_kdump
    assert (tmp_path / "etc/default/kdump-tools").read_text() == "USE_KDUMP=1\n"


DASH_CASES = [
    'A=plain\nB=\'single $A \\\\ "x"\'\nC="double $A \\$A \\\\ \\" \\` \'"\n',
    'A=x\nB=${A}y${UNSET}z\nC="${UNSET:-dflt} ${A:-no} ${UNSET-dash} ${A-no}"\n',
    'export A="multi\nline"  # comment\nB=a#b\nC=  # empty\n',
    'A=un\\ quoted\\\\back\nB="con"\'cat\'ed\nC="a\\\nb"\nD=$\nE="$"\n',
    "\t  A=1\n\n# x\nexport B\nB=2\nA=$A$B\n",
]


@pytest.mark.parametrize("text", DASH_CASES)
def test_values_match_what_dash_makes_of_the_file(tmp_path: Path, text: str) -> None:
    import subprocess

    path = tmp_path / "conf"
    path.write_text(text)
    mine = {a.name: a.value for a in parse_assignments(text, "conf")}
    script = ". ./conf; " + " ".join(f'printf "%s\\0" "${n}";' for n in mine)
    out = subprocess.run(
        ["dash", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert dict(zip(mine, out.split("\0")[:-1], strict=True)) == mine


@given(st.text(st.characters(blacklist_characters="\n\0", blacklist_categories=("Cs",))))
def test_quote_value_round_trips_any_text(value: str) -> None:
    text = update_config_text("# keep\n", {"KDUMP_FAIL_CMD": value} if value else {})
    assert parse_config(text).fail_cmd == (value or None)
    assert text.startswith("# keep\n")
