"""systemd generator: order kdump-tools-dump.service after what this config's targets need.

A unit file cannot read /etc/default/kdump-tools, so the capture unit is static and minimal and
this generator (run by systemd at boot, before any unit starts) writes a drop-in for it:
``RequiresMountsFor=`` KDUMP_COREDIR when the dump stays local, and ``network-online.target``
only when an SSH or NFS target needs the network.  In a normal boot (no /proc/vmcore) it writes
nothing and returns at once.  A config it cannot parse gets the broadest ordering (mounts and
network), so the dump is still attempted.

Installed as /usr/lib/systemd/system-generators/kdumpd-dump-generator (a two-line wrapper).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from kdumpd.config import Config, load_config
from kdumpd.errors import KdumpdError
from kdumpd.system import SystemRoot

UNIT = "kdump-tools-dump.service"
DROP_IN = "50-kdumpd-targets.conf"


def _escape(path: str) -> str:
    # unit-file values: a backslash and "%" are special; a path from the config holds neither
    # after validation, but the escape keeps a stray one from changing the unit's meaning
    return path.replace("\\", "\\\\").replace("%", "%%")


def drop_in(cfg: Config | None) -> str:
    """The drop-in text for a config (None: it could not be read)."""
    lines = ["# Written by kdumpd-dump-generator from /etc/default/kdump-tools.", "[Unit]"]
    remote = cfg is None or cfg.ssh is not None or cfg.nfs is not None
    local = cfg is None or (cfg.ssh is None and cfg.nfs is None)
    if local:
        coredir = cfg.coredir if cfg is not None else "/var/crash"
        lines.append(f"RequiresMountsFor={_escape(coredir)}")
    if remote:
        lines += ["Wants=network-online.target", "After=network-online.target"]
    return "\n".join(lines) + "\n"


def generate(root: SystemRoot, out_dir: Path) -> None:
    if not root.exists("/proc/vmcore"):
        return  # not a capture boot
    try:
        cfg: Config | None = load_config(root)
    except KdumpdError as exc:
        print(f"kdumpd-dump-generator: {exc}", file=sys.stderr)
        cfg = None
    target = out_dir / f"{UNIT}.d"
    target.mkdir(parents=True, exist_ok=True)
    (target / DROP_IN).write_text(drop_in(cfg))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: kdumpd-dump-generator NORMAL-DIR [EARLY-DIR LATE-DIR]", file=sys.stderr)
        return 2
    generate(SystemRoot.from_env(), Path(args[0]))
    return 0
