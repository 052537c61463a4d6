"""``kdump-config show | status | test | default-enable``: the readiness report, read-only."""

from __future__ import annotations

import json
from typing import Any

from kdumpd.capture_kernel import kernel_is_relocatable, release_of_image
from kdumpd.cli.context import EXIT_NOT_READY, EXIT_OK, Context, UsageError, emit
from kdumpd.cli.render import (
    crash_addr,
    format_kexec_command,
    image_line,
    problem_lines,
    report_json,
    show_lines,
    status_lines,
)
from kdumpd.crashkernel import rounded_ram
from kdumpd.kexec import kexec_argv
from kdumpd.machine import free_bytes
from kdumpd.memory_estimate import default_enable_checks
from kdumpd.readiness import Report, assess_machine
from kdumpd.system import SystemRoot


def _no_args(ctx: Context, name: str, args: list[str]) -> None:
    if args:
        raise UsageError(f"{ctx.prog} {name}: unexpected argument {args[0]!r}")


def _link(root: SystemRoot, path: str | None) -> tuple[str | None, str | None]:
    if path and root.path(path).is_symlink():
        return path, str(root.path(path).readlink())
    return path, None


def last_kexec_command(report: Report, root: SystemRoot) -> str | None:
    """What the last successful load ran: the arming record, else kdump-tools' kexec_cmd."""
    try:
        from kdumpd.arming import read_record
    except ImportError:  # arming not installed in this build: only kdump-tools' record counts
        record = None
    else:
        record = read_record(root)
    if record is not None and record.ok and record.action == "load" and record.command:
        return format_kexec_command(record.command)
    return report.system.kexec_cmd


def _images(report: Report) -> tuple[str | None, str | None]:
    kernel = report.config.kernel or (report.images.kernel if report.images else None)
    initrd = report.config.initrd or (report.images.initrd if report.images else None)
    return kernel, initrd


def show(ctx: Context, args: list[str]) -> int:
    _no_args(ctx, "show", args)
    report = assess_machine(ctx.root)
    last = last_kexec_command(report, ctx.root)
    if ctx.json:
        emit(json.dumps(report_json(report, last), indent=2))
    else:
        kernel, initrd = _images(report)
        emit(*show_lines(report, _link(ctx.root, kernel), _link(ctx.root, initrd), last))
    return EXIT_OK


def status(ctx: Context, args: list[str]) -> int:
    _no_args(ctx, "status", args)
    report = assess_machine(ctx.root)
    if ctx.json:
        data = report_json(report, last_kexec_command(report, ctx.root))
        emit(json.dumps({k: data[k] for k in ("state", "armed", "problems")}, indent=2))
    else:
        emit(*status_lines(report))
    return EXIT_OK if report.state == "ready" else EXIT_NOT_READY


def test(ctx: Context, args: list[str]) -> int:
    """Dry run: what ``load`` would load and with which command, without loading it."""
    _no_args(ctx, "test", args)
    report = assess_machine(ctx.root)
    config = report.config
    argv: list[str] | None = None
    if report.images is not None:
        argv = kexec_argv(
            report.images.kernel, report.images.initrd, report.cmdline, config.kexec_args
        )
    if ctx.json:
        data = report_json(report, last_kexec_command(report, ctx.root))
        data["kexec_command"] = argv
        emit(json.dumps(data, indent=2))
        return EXIT_OK if argv else 1
    kernel, initrd = _images(report)
    release = release_of_image(ctx.root, kernel) if kernel else None
    relocatable = release is not None and kernel_is_relocatable(ctx.root, release)
    emit(
        f"USE_KDUMP:\t\t{config.value('USE_KDUMP')}",
        f"KDUMP_COREDIR:\t\t{config.coredir}",
        f"crashkernel addr\t\t{crash_addr(report)}",
        f"kdump kernel addr\t\t{'relocatable' if relocatable else ''}",
        "kdump kernel:",
        image_line(*_link(ctx.root, kernel)),
        "kdump initrd: ",
        image_line(*_link(ctx.root, initrd)),
        "kexec command to be used:",
        "  "
        + (format_kexec_command(argv) if argv else "none: no usable capture kernel (see problems)"),
        "",
        *problem_lines(report),
    )
    return EXIT_OK if argv else 1


def default_enable(ctx: Context, args: list[str]) -> int:
    """Ubuntu's kdump_set_default conditions, each with its verdict; 0 when all hold, else 3."""
    _no_args(ctx, "default-enable", args)
    system = assess_machine(ctx.root).system
    var = ctx.root.path("/var")
    checks = default_enable_checks(
        arch=system.arch,
        cpus=system.cpus,
        ram_bytes=rounded_ram(system.system_ram),  # a "6 GB" machine keeps its 6 GB
        swap_bytes=system.swap,
        var_free_bytes=free_bytes(var) if var.is_dir() else None,
        uefi=system.efi,
    )
    enable = all(c.ok for c in checks)
    if ctx.json:
        data: dict[str, Any] = {
            "enable": enable,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks],
        }
        emit(json.dumps(data, indent=2))
    else:
        emit(*(f"{c.name + ':':14}{'ok  ' if c.ok else 'FAIL'}  {c.detail}" for c in checks))
        emit(f"enable kdump by default: {'yes' if enable else 'no'}")
    return EXIT_OK if enable else EXIT_NOT_READY
