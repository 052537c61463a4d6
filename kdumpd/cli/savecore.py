"""``kdumpd-capture savecore`` and ``kdump-config savecore``: save the crash dump of this boot.

``kdumpd-capture savecore`` is the capture kernel's job (kdump-tools-dump.service runs it): save,
then run KDUMP_FAIL_CMD if the save failed, otherwise reboot (``--no-reboot`` skips both).
``kdump-config savecore`` only saves, like kdump-tools' subcommand of that name.

Exit status: 0 when every target holds a complete dump, 1 otherwise (also when a bad config
forced the defaults: the dump is still saved, the failure still reported), 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import NoReturn

from kdumpd.cli.context import Context
from kdumpd.config import Config, load_config
from kdumpd.errors import ConfigError, KdumpdError, UsageError
from kdumpd.savecore import after
from kdumpd.savecore.engine import VmcoreEngine, capture_options
from kdumpd.savecore.run import Capture, targets_for
from kdumpd.system import SystemRoot

VMCORE = "/proc/vmcore"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _absolute(text: str) -> str:
    if not text.startswith("/"):
        raise argparse.ArgumentTypeError(f"{text!r} is not an absolute path")
    return text


def _parser(prog: str, with_reboot: bool) -> argparse.ArgumentParser:
    p = _Parser(prog=prog, description="Save the crashed kernel's dmesg and dump (capture kernel).")
    p.add_argument("--root", metavar="DIR", help="read /proc, /etc, /var … under DIR")
    p.add_argument(
        "--vmcore",
        default=VMCORE,
        type=_absolute,
        metavar="PATH",
        help="system path of the vmcore to save (under --root)",
    )
    if with_reboot:
        p.add_argument(
            "--no-reboot",
            action="store_true",
            help="only save: neither KDUMP_FAIL_CMD nor the reboot afterwards",
        )
    return p


def log(text: str) -> None:
    # stdout is journal+console in kdump-tools-dump.service: both places an admin looks
    print(text, flush=True)


def _uptime(root: SystemRoot) -> float | None:
    text = root.read_text("/proc/uptime")
    try:
        return float(text.split()[0]) if text else None
    except ValueError:
        return None


def _config(root: SystemRoot) -> tuple[Config, list[str]]:
    """The config; a broken one must not cost the dump, so its defaults are used instead."""
    try:
        return load_config(root), []
    except KdumpdError as exc:
        log(f"kdumpd-capture: {exc}; saving with the default settings")
        return Config(use_kdump=True), [str(exc)]


def _size(root: SystemRoot, vmcore: str) -> int:
    try:
        return root.path(vmcore).stat().st_size
    except OSError:
        return 0


def save(root: SystemRoot, vmcore: str, cfg: Config, problems: list[str]) -> int:
    """Save to every configured target; the exit status."""
    boot_to_start = _uptime(root)
    path = root.path(vmcore)
    size = _size(root, vmcore)
    t0 = time.monotonic()
    try:
        options = capture_options(cfg.makedump_args, cfg.path)
    except ConfigError as exc:  # as with a broken config file: save with the defaults
        log(f"kdumpd-capture: {exc}; using the default dump options")
        problems = [*problems, str(exc)]
        options = capture_options((), cfg.path)
    log(f"kdumpd-capture: saving {vmcore} ({size} bytes), dump level {options.dump_level}")
    engine = VmcoreEngine(str(path), options)
    try:
        capture = Capture(cfg, engine, log, boot_to_start=boot_to_start)
        with targets_for(cfg, root, log) as (targets, unusable):
            problems = problems + unusable
            outcomes = [capture.save(t) for t in targets]
    finally:
        engine.close()
    failed = bool(problems) or not outcomes or not all(o.ok for o in outcomes)
    for p in problems:
        log(f"kdumpd-capture: {p}")
    for o in outcomes:
        detail = "; ".join(o.errors)
        log(f"kdumpd-capture: {o.where}: {o.status}" + (f" ({detail})" if detail else ""))
    log(
        f"kdumpd-capture: {'FAILED' if failed else 'done'} in {time.monotonic() - t0:.1f} s"
        + (f", {boot_to_start:.1f} s after boot" if boot_to_start is not None else "")
    )
    return 1 if failed else 0


def _run(prog: str, argv: Sequence[str], given: SystemRoot | None, reboot: bool) -> int:
    try:
        args = _parser(prog, reboot).parse_args(list(argv))
    except UsageError as exc:
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    root = given or SystemRoot.from_env(args.root)
    if _size(root, args.vmcore) == 0:
        # checked before anything else: run by hand on a running system, savecore must never
        # go on to KDUMP_FAIL_CMD or a reboot
        print(f"{prog}: {args.vmcore} is missing or empty: not a capture kernel", file=sys.stderr)
        return 1
    cfg = Config()
    try:
        cfg, problems = _config(root)
        if not cfg.use_kdump:
            log("kdumpd-capture: USE_KDUMP is 0: not saving the dump")
            code = 0
        else:
            code = save(root, args.vmcore, cfg, problems)
    except KdumpdError as exc:
        print(f"{prog}: {exc}", file=sys.stderr, flush=True)
        code = exc.exit_code
    except Exception as exc:
        # In the capture kernel nobody reads a traceback and the machine must still come back:
        # one line, then KDUMP_FAIL_CMD or the reboot like any other failure.
        print(f"{prog}: internal error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        code = 1
    if not reboot or args.no_reboot:
        return code
    if code != 0 and cfg.fail_cmd:
        log("kdumpd-capture: running KDUMP_FAIL_CMD")
        after.run_fail_command(cfg.fail_cmd)
        return code
    power = after.power_for(root)
    if power is None:
        log("kdumpd-capture: systemd reboots when kdump-tools-dump.service ends")
        return code
    log("kdumpd-capture: rebooting")
    power.reboot()
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """``kdumpd-capture savecore …``"""
    return _run(
        "kdumpd-capture savecore", sys.argv[2:] if argv is None else argv, None, reboot=True
    )


def savecore(ctx: Context, args: list[str]) -> int:
    """``kdump-config savecore``: save only."""
    return _run(f"{ctx.prog} savecore", args, ctx.root, reboot=False)
