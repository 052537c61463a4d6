"""``/etc/default/kdump-tools`` as an immutable, validated :class:`Config`.

Every variable kdump-tools reads is here with kdump-tools' own default (``kdump-config`` applies
them with ``${VAR:=default}``, so an empty value means the default too). The file is parsed by
:mod:`kdumpd.config_syntax`, never sourced. Validation stops at the first bad value with a
one-line :class:`~kdumpd.errors.ConfigError` naming file, line and variable.

Typical use::

    config = load_config(SystemRoot.from_env())
    config.coredir, config.ssh, config.dump_level
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from kdumpd.config_syntax import parse_assignments
from kdumpd.errors import ConfigError
from kdumpd.system import SystemRoot

CONFIG_PATH = "/etc/default/kdump-tools"
DEFAULT_CMDLINE_APPEND = (
    "reset_devices systemd.unit=kdump-tools-dump.service nr_cpus=1 irqpoll usbcore.nousb"
)
COMPRESSIONS = ("bzip2", "gzip", "lz4", "xz")


@dataclass(frozen=True)
class Variable:
    """A kdump-tools variable: its default (None: unset) and what it means."""

    name: str
    default: str | None
    doc: str


VARIABLES: tuple[Variable, ...] = (
    Variable("USE_KDUMP", None, "1 arms kdump, 0 (or unset) disables it"),
    Variable("KDUMP_KERNEL", None, "kernel to kexec; unset: the running kernel if relocatable"),
    Variable("KDUMP_INITRD", None, "initrd of the capture kernel"),
    Variable("KDUMP_COREDIR", "/var/crash", "where dumps are saved (NFS mount point, SSH path)"),
    Variable("KDUMP_FAIL_CMD", None, "run when saving fails, instead of rebooting"),
    Variable("KDUMP_DUMP_DMESG", "1", "1 saves the crashed kernel's log as dmesg.<stamp>"),
    Variable("KDUMP_NUM_DUMPS", "0", "keep at most this many local dumps (0: keep all)"),
    Variable("KDUMP_COMPRESSION", None, "outer compressor: bzip2, gzip, lz4 or xz"),
    Variable("MAKEDUMP_ARGS", "-F -c -d 31", "makedumpfile options (dump level: -d 0..31)"),
    Variable("KDUMP_KEXEC_ARGS", None, "extra kexec arguments"),
    Variable("KDUMP_CMDLINE", None, "capture kernel command line; unset: /proc/cmdline, cleaned"),
    Variable("KDUMP_CMDLINE_APPEND", DEFAULT_CMDLINE_APPEND, "appended to the capture cmdline"),
    Variable("SSH", None, "user@host receiving dumps over SSH"),
    Variable("SSH_KEY", "/root/.ssh/kdump_id_rsa", "private key for SSH dumps"),
    Variable("HOSTTAG", "ip", "remote directory prefix: ip or hostname"),
    Variable("NFS", None, "host:/export mounted on KDUMP_COREDIR for dumps"),
    Variable("NFS_TIMEO", "600", "NFS timeo mount option"),
    Variable("NFS_RETRANS", "3", "NFS retrans mount option"),
    Variable("NFS_MOUNT_RETRY", "4", "NFS mount attempts"),
    Variable("SSH_KDUMP_RETRY", "16", "attempts of the remote mkdir"),
    Variable("FTP", None, "host[:path] receiving dumps over FTP"),
    Variable("FTP_USER", None, "FTP user (anonymous when unset)"),
    Variable("FTP_PASSWORD", None, "FTP password"),
    Variable("FTP_PORT", "21", "FTP port"),
)
KNOWN = {v.name: v for v in VARIABLES}

# Characters that mean something to a shell: never accepted where a host or a path belongs.
_UNSAFE = re.compile(r"""[\s;&|<>()$`\\"'*?\[\]{}!#~^]""")
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,62})(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}))*")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")


@dataclass(frozen=True)
class SshTarget:
    user: str
    host: str

    def __str__(self) -> str:
        return f"{self.user}@{self.host}"


@dataclass(frozen=True)
class NfsTarget:
    host: str
    path: str

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.path}"


@dataclass(frozen=True)
class FtpTarget:
    host: str
    path: str  # "/" when the value names no path, as kdump-tools does


@dataclass(frozen=True)
class Config:
    """The effective kdump configuration (defaults applied, values validated)."""

    path: str = CONFIG_PATH
    use_kdump: bool = False
    kernel: str | None = None
    initrd: str | None = None
    coredir: str = "/var/crash"
    fail_cmd: str | None = None
    dump_dmesg: bool = True
    num_dumps: int = 0
    compression: str | None = None
    makedump_args: tuple[str, ...] = ("-F", "-c", "-d", "31")
    kexec_args: tuple[str, ...] = ()
    cmdline: str | None = None
    cmdline_append: str = DEFAULT_CMDLINE_APPEND
    ssh: SshTarget | None = None
    ssh_key: str = "/root/.ssh/kdump_id_rsa"
    hosttag: Literal["ip", "hostname"] = "ip"
    nfs: NfsTarget | None = None
    nfs_timeo: int = 600
    nfs_retrans: int = 3
    nfs_mount_retry: int = 4
    ssh_kdump_retry: int = 16
    ftp: FtpTarget | None = None
    ftp_user: str | None = None
    ftp_password: str | None = None
    ftp_port: int = 21
    # Effective text of every known variable ("" when unset), then assignments of variables
    # kdump-tools does not know, both in a stable order: what GetConfig reports.
    values: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    unknown: tuple[tuple[str, str], ...] = ()

    @property
    def dump_level(self) -> int:
        """The makedumpfile ``-d`` level in MAKEDUMP_ARGS (0 when absent, as makedumpfile)."""
        return _dump_level(self.makedump_args) or 0

    @property
    def target(self) -> Literal["local", "ssh", "nfs", "ftp"]:
        """Where the dump goes first; kdump-tools tries FTP, then SSH, then NFS/local."""
        if self.ftp:
            return "ftp"
        if self.ssh:
            return "ssh"
        return "nfs" if self.nfs else "local"

    def value(self, name: str) -> str:
        """The effective text of a variable ("" when unset)."""
        return dict(self.values).get(name, "")


def _dump_level(args: tuple[str, ...]) -> int | None:
    level: int | None = None
    for i, arg in enumerate(args):
        text: str | None = None
        if arg == "-d":
            text = args[i + 1] if i + 1 < len(args) else ""
        elif arg.startswith("-d") and not arg.startswith("--"):
            text = arg[2:]
        if text is not None:
            if not text.isdigit() or not 0 <= int(text) <= 31:
                raise ValueError(f"dump level -d {text} is outside 0..31")
            level = int(text)
    return level


# -- per-variable validators: text -> typed value, raising ValueError with the reason ----------


def _flag(text: str) -> bool:
    if text not in ("0", "1"):
        raise ValueError("expected 0 or 1")
    return text == "1"


def _use_kdump(text: str) -> bool:
    # The init script tests ``[ "$USE_KDUMP" -ne 0 ]``: any integer works, non-zero arms.
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError("expected 0 or 1")
    return int(text) != 0


def _count(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    def check(text: str) -> int:
        if not text.isdigit():
            raise ValueError("expected a whole number")
        n = int(text)
        if n < minimum or (maximum is not None and n > maximum):
            bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
            raise ValueError(f"expected a number {bound}")
        return n

    return check


def _abs_path(text: str) -> str:
    if not text.startswith("/"):
        raise ValueError("expected an absolute path")
    if _UNSAFE.search(text):
        raise ValueError("shell metacharacter or space in a path")
    return text


def _host(text: str) -> str:
    if _HOSTNAME.fullmatch(text) or _IPV6.fullmatch(text):
        return text
    if _UNSAFE.search(text):
        raise ValueError("shell metacharacter or space in a host name")
    raise ValueError("expected a host name or an IP address")


def _ssh(text: str) -> SshTarget:
    user, at, host = text.partition("@")
    if not at or not user or not host:
        raise ValueError("expected user@host")
    if not _USER.fullmatch(user):
        raise ValueError("shell metacharacter or invalid character in the user name")
    return SshTarget(user, _host(host.removeprefix("[").removesuffix("]")))


def _nfs(text: str) -> NfsTarget:
    if text.startswith("["):  # [ipv6]:/export
        host, _, rest = text[1:].partition("]")
        sep, path = rest[:1], rest[1:]
    else:
        host, sep, path = text.partition(":")
    if sep != ":" or not host or not path.startswith("/"):
        raise ValueError("expected host:/path")
    return NfsTarget(_host(host), _abs_path(path))


def _ftp(text: str) -> FtpTarget:
    host, _, path = text.partition(":")
    return FtpTarget(_host(host), _abs_path(path) if path else "/")


def _argv(text: str) -> tuple[str, ...]:
    # kdump-tools splits these on blanks (no quote removal) and hands them to a shell; kdumpd
    # passes them as argv, and refuses operators that would have meant something else there.
    if re.search(r"[;&|<>`$()]", text):
        raise ValueError("shell operator in an argument list")
    return tuple(text.split())


def _makedump_args(text: str) -> tuple[str, ...]:
    args = _argv(text)
    _dump_level(args)
    return args


def _one_of(*choices: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in choices:
            raise ValueError("expected " + " or ".join(choices))
        return text

    return check


def _free_text(text: str) -> str:
    if "\n" in text or "\0" in text:
        raise ValueError("newline or NUL in the value")
    return text


# Variable -> (Config field, validator). Unset/empty variables take the dataclass default.
_FIELDS: dict[str, tuple[str, Callable[[str], object]]] = {
    "USE_KDUMP": ("use_kdump", _use_kdump),
    "KDUMP_KERNEL": ("kernel", _abs_path),
    "KDUMP_INITRD": ("initrd", _abs_path),
    "KDUMP_COREDIR": ("coredir", _abs_path),
    "KDUMP_FAIL_CMD": ("fail_cmd", _free_text),
    "KDUMP_DUMP_DMESG": ("dump_dmesg", _flag),
    "KDUMP_NUM_DUMPS": ("num_dumps", _count(0)),
    "KDUMP_COMPRESSION": ("compression", _one_of(*COMPRESSIONS)),
    "MAKEDUMP_ARGS": ("makedump_args", _makedump_args),
    "KDUMP_KEXEC_ARGS": ("kexec_args", _argv),
    "KDUMP_CMDLINE": ("cmdline", _free_text),
    "KDUMP_CMDLINE_APPEND": ("cmdline_append", _free_text),
    "SSH": ("ssh", _ssh),
    "SSH_KEY": ("ssh_key", _abs_path),
    "HOSTTAG": ("hosttag", _one_of("ip", "hostname")),
    "NFS": ("nfs", _nfs),
    "NFS_TIMEO": ("nfs_timeo", _count(1)),
    "NFS_RETRANS": ("nfs_retrans", _count(0)),
    "NFS_MOUNT_RETRY": ("nfs_mount_retry", _count(1)),
    "SSH_KDUMP_RETRY": ("ssh_kdump_retry", _count(1)),
    "FTP": ("ftp", _ftp),
    "FTP_USER": ("ftp_user", _free_text),
    "FTP_PASSWORD": ("ftp_password", _free_text),
    "FTP_PORT": ("ftp_port", _count(1, 65535)),
}
assert set(_FIELDS) == set(KNOWN)


def config_from_values(
    values: Mapping[str, str], path: str = CONFIG_PATH, lines: Mapping[str, int] | None = None
) -> Config:
    """Validate raw variable texts (as the file assigns them) into a :class:`Config`."""
    lines = lines or {}
    typed: dict[str, object] = {}
    effective: list[tuple[str, str]] = []
    for var in VARIABLES:
        text = values.get(var.name, "")
        if text:
            fname, check = _FIELDS[var.name]
            try:
                typed[fname] = check(text)
            except ValueError as exc:
                where = f"{path}:{lines[var.name]}" if var.name in lines else path
                raise ConfigError(f"{where}: {var.name}: {exc}, found {text!r}") from None
        effective.append((var.name, text or (var.default or "")))
    unknown = tuple((k, v) for k, v in values.items() if k not in KNOWN)
    return Config(path=path, values=tuple(effective), unknown=unknown, **typed)  # type: ignore[arg-type]


def parse_config(text: str, path: str = CONFIG_PATH) -> Config:
    """Parse and validate the text of a kdump-tools config file."""
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for a in parse_assignments(text, path):
        values[a.name] = a.value
        lines[a.name] = a.first_line
    return config_from_values(values, path, lines)


def load_config(root: SystemRoot, path: str = CONFIG_PATH) -> Config:
    """The machine's configuration; a missing file means every default (kdump disabled)."""
    text = root.read_text(path)
    return parse_config(text or "", path)
