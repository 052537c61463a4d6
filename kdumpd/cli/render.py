"""Text and JSON forms of a readiness :class:`~kdumpd.readiness.Report`.

The text keeps kdump-tools' field names, tabs and wording (``kdump-config show`` of kdump-tools
1.10, as in the Ubuntu guide), so scripts that grep ``current state:`` keep working; kdumpd adds
the reserved region (in the kernel's dmesg wording) and the problems at the end.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Any

from kdumpd.config import Config
from kdumpd.crashkernel import dmesg_line, format_size
from kdumpd.readiness import Report

SECRET_VARIABLES = ("FTP_PASSWORD",)


def format_kexec_command(argv: Sequence[str]) -> str:
    """An argv as kdump-tools prints it: ``--command-line="…"`` quoted, the rest shell-quoted."""
    out = []
    for arg in argv:
        if arg.startswith("--command-line="):
            out.append('--command-line="' + arg.split("=", 1)[1] + '"')
        else:
            out.append(shlex.quote(arg))
    return " ".join(out)


def image_line(path: str | None, link_target: str | None) -> str:
    """kdump-tools runs ``file`` on a link: ``PATH: symbolic link to TARGET``."""
    if path and link_target is not None:
        return f"   {path}: symbolic link to {link_target}"
    return f"   {path or ''}"


def crash_addr(report: Report) -> str:
    return " ".join(f"0x{e.start:x}" for e in report.system.crash_regions)


def state_text(report: Report) -> str:
    mode = report.dump_mode
    return f"ready to {mode}" if report.state == "ready" else f"Not ready to {mode}"


def reserved_lines(report: Report) -> list[str]:
    """The reservation as the kernel logged it at boot (``dmesg | grep -i crashkernel``)."""
    main = report.system.crash_main
    if main is not None:
        low = [e for e in report.system.crash_regions if e is not main]
        return [dmesg_line(e.start, e.size, low=True) for e in low] + [
            dmesg_line(main.start, main.size)
        ]
    if report.expected.param:
        return [f"crashkernel reserved: none ({report.expected.param})"]
    return ["crashkernel reserved: none (no crashkernel= on the kernel command line)"]


def problem_lines(report: Report) -> list[str]:
    if not report.problems:
        return ["problems: none"]
    lines = ["problems:"]
    for p in report.problems:
        tag = "" if p.severity == "error" else " (warning)"
        lines.append(f"  - {p.code}{tag}: {p.message}")
    return lines


def show_lines(
    report: Report,
    kernel: tuple[str | None, str | None],
    initrd: tuple[str | None, str | None],
    last_command: str | None,
) -> list[str]:
    """``kdump-config show``; ``kernel``/``initrd`` are (path, link target or None)."""
    config = report.config
    lines = [
        f"DUMP_MODE:\t\t{report.dump_mode}",
        f"USE_KDUMP:\t\t{config.value('USE_KDUMP')}",
        f"KDUMP_COREDIR:\t\t{config.coredir}",
    ]
    if report.dump_mode == "kdump":
        lines.append(f"crashkernel addr: {crash_addr(report)}")
    lines += [image_line(*kernel), "kdump initrd: ", image_line(*initrd)]
    lines += remote_lines(config)
    lines.append(f"current state:    {state_text(report)}")
    if report.dump_mode == "kdump":
        lines += [
            "",
            f"crashkernel suggested size: {report.suggested}",
            *reserved_lines(report),
            "",
            "kexec command:",
            "  " + (last_command or "no kexec command recorded"),
        ]
    return [*lines, "", *problem_lines(report)]


def remote_lines(config: Config) -> list[str]:
    lines = []
    if config.ssh:
        lines += [
            f"SSH:              {config.value('SSH')}",
            f"SSH_KEY:          {config.ssh_key}",
        ]
    if config.nfs:
        lines += [
            f"NFS:              {config.value('NFS')}",
            f"NFS_TIMEO:        {config.nfs_timeo}",
            f"NFS_RETRANS       {config.nfs_retrans}",
        ]
    if config.ftp:
        lines.append(f"FTP:              {config.value('FTP')}")
        if config.ftp_user:
            lines.append(f"FTP_USER:         {config.ftp_user}")
        if config.ftp_password:
            lines.append("FTP_PASSWORD:     is set")
        lines.append(f"FTP_PORT:         {config.ftp_port}")
    if config.ssh or config.nfs or config.ftp:
        lines.append(f"HOSTTAG:          {config.hosttag}")
    return lines


def status_lines(report: Report) -> list[str]:
    """``kdump-config status``: kdump-tools' one line, then the blocking problems."""
    lines = [f"current state   : {state_text(report)}"]
    lines += [f"  - {p.code}: {p.message}" for p in report.errors]
    return lines


def report_json(report: Report, last_command: str | None) -> dict[str, Any]:
    """The whole report for ``--json`` (and the daemon's ``Describe``)."""
    config, system = report.config, report.system
    values = {k: ("is set" if k in SECRET_VARIABLES and v else v) for k, v in config.values}
    return {
        "state": report.state,
        "problems": [
            {"code": p.code, "severity": p.severity, "message": p.message} for p in report.problems
        ],
        "dump_mode": report.dump_mode,
        "armed": report.armed,
        "use_kdump": config.use_kdump,
        "coredir": config.coredir,
        "target": config.target,
        "crashkernel": {
            "parameter": report.expected.param,
            "expected_bytes": report.expected.total,
            "expected": format_size(report.expected.total) if report.expected.total else "0",
            "error": report.expected.error,
            "reserved_bytes": report.reserved,
            "address": report.reserved_start,
            "system_ram_bytes": system.system_ram,
        },
        "suggested": {
            "bytes": report.suggested.mib << 20 if report.suggested.mib is not None else 0,
            "text": str(report.suggested),
        },
        "kernel": report.images.kernel if report.images else None,
        "initrd": report.images.initrd if report.images else None,
        "kexec_cmdline": report.cmdline,
        "last_kexec_command": last_command,
        "kernel_release": system.kernel_release,
        "config_file": config.path,
        "config": values,
    }
