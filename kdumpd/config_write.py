"""Change variables in ``/etc/default/kdump-tools`` while keeping everything else.

:func:`update_config_text` is pure: it rewrites only the assignments of the changed variables
(comments, blank lines, unknown variables and the order stay) and validates the result.
:func:`write_config` applies it to the machine's file atomically (temporary file, fsync, rename,
fsync of the directory), so a crash leaves either the old file or the new one, never half of one.

For the D-Bus ``SetConfig``::

    config = write_config(root, {"SSH": "kdump@backup", "NFS": None})  # None: back to default
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from collections.abc import Mapping

from kdumpd.config import CONFIG_PATH, KNOWN, Config, config_from_values, parse_config
from kdumpd.config_syntax import Assignment, parse_assignments
from kdumpd.errors import ConfigError
from kdumpd.system import SystemRoot

_BARE = re.compile(r"[A-Za-z0-9_./:@,+=%-]+")


def quote_value(value: str) -> str:
    """Shell text that a POSIX shell (and :mod:`kdumpd.config_syntax`) reads back as ``value``."""
    if _BARE.fullmatch(value):
        return value
    return '"' + re.sub(r'([\\"$`])', r"\\\1", value) + '"'


def _check_changes(changes: Mapping[str, str | None], path: str) -> None:
    for name, value in changes.items():
        if name not in KNOWN:
            raise ConfigError(f"{path}: {name}: not a kdump-tools variable")
        if value is not None and ("\n" in value or "\0" in value):
            raise ConfigError(f"{path}: {name}: newline or NUL in the value, found {value!r}")


def update_config_text(
    text: str, changes: Mapping[str, str | None], path: str = CONFIG_PATH
) -> str:
    """``text`` with each variable in ``changes`` set (None: assignment removed, default applies).

    The first assignment of a changed variable is rewritten in place and later ones are dropped
    (they would override it). A variable the file does not assign is added after its commented-out
    template line (``#NFS=...`` in the shipped file), else at the end. Raises ConfigError if the
    existing text cannot be read or the result does not validate.
    """
    _check_changes(changes, path)
    # Name the bad value without a line number: the line would be one of a file not yet written.
    config_from_values({k: v for k, v in changes.items() if v}, path)
    lines = text.splitlines(keepends=True)
    by_name: dict[str, list[Assignment]] = {}
    for a in parse_assignments(text, path):
        by_name.setdefault(a.name, []).append(a)

    replace: dict[int, list[str]] = {}  # 0-based first line -> replacement lines
    drop: set[int] = set()
    appended: list[str] = []
    for name, value in changes.items():
        found = by_name.get(name, [])
        for a in found:
            drop.update(range(a.first_line - 1, a.last_line))
        if value is None:
            continue
        new_line = f"{name}={quote_value(value)}\n"
        if found:
            prefix = "export " if found[0].exported else ""
            replace[found[0].first_line - 1] = [prefix + new_line]
            continue
        template = _template_line(lines, name)
        if template is None:
            appended.append(new_line)
        else:
            replace.setdefault(template, [lines[template]]).append(new_line)

    out: list[str] = []
    for i, line in enumerate(lines):
        if i in replace:
            out.extend(replace[i])
        elif i not in drop:
            out.append(line)
    if appended:
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.extend(appended)
    new_text = "".join(out)
    parse_config(new_text, path)  # refuse to produce a file kdumpd itself would reject
    return new_text


def _template_line(lines: list[str], name: str) -> int | None:
    """Index of the last ``#NAME=`` comment line, the shipped file's place for NAME."""
    pattern = re.compile(rf"\s*#\s*{name}=")
    hits = [i for i, line in enumerate(lines) if pattern.match(line)]
    return hits[-1] if hits else None


def write_config(
    root: SystemRoot, changes: Mapping[str, str | None], path: str = CONFIG_PATH
) -> Config:
    """Apply ``changes`` to the config file under ``root`` atomically; return the new Config."""
    target = root.path(path)
    # Two writers (the daemon, an admin's kdump-config) must not lose each other's changes: the
    # read-modify-rename runs under a lock on the directory, which the rename does not replace.
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror}") from exc
    try:
        fcntl.flock(dir_fd, fcntl.LOCK_EX)
        return _write_locked(root, changes, path, dir_fd)
    finally:
        os.close(dir_fd)


def _write_locked(
    root: SystemRoot, changes: Mapping[str, str | None], path: str, dir_fd: int
) -> Config:
    target = root.path(path)
    old = root.read_text(path) or ""
    new_text = update_config_text(old, changes, path)
    config = parse_config(new_text, path)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(new_text)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise ConfigError(f"{path}: cannot write: {exc.strerror}") from exc
        raise
    os.fsync(dir_fd)  # the rename itself is durable only once the directory is
    return config
