"""``kdump-config``: the kdump-tools compatible command line.

Global options, accepted anywhere before ``--``: ``--root DIR`` (or ``KDUMPD_ROOT``) reads every
system path under DIR; ``--json`` asks for JSON where a command supports it.

Registering a subcommand
------------------------
Subcommands live in their owners' modules and are imported only when run. A handler is::

    def load(ctx: kdumpd.cli.context.Context, args: list[str]) -> int: ...

``ctx`` carries ``root`` (a SystemRoot), ``json`` and ``prog``; ``args`` are the words after the
subcommand (global options removed); the return value is the exit code (``kdumpd.cli.context``:
0 ok, 1 failure, 2 bad usage or config, 3 not ready). Raise a ``KdumpdError`` subclass for a
failure: the dispatcher prints its message on one line and exits with its ``exit_code``. To add a
command, add one :class:`Command` line to :data:`COMMANDS` naming ``"module:function"``. Until the
module or function exists, running the command says so and exits 1 (never a silent no-op).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

from kdumpd.cli.context import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, Context
from kdumpd.errors import KdumpdError, UsageError
from kdumpd.system import SystemRoot

Handler = Callable[[Context, list[str]], int]


@dataclass(frozen=True)
class Command:
    name: str
    target: str  # "package.module:function"
    summary: str
    usage: str = ""


COMMANDS: tuple[Command, ...] = (
    Command("help", "kdumpd.cli.kdump_config:help_command", "print this page"),
    Command(
        "test",
        "kdumpd.cli.readiness_commands:test",
        "dry run: show the capture kernel, initrd and kexec command that load would use",
    ),
    Command(
        "show",
        "kdumpd.cli.readiness_commands:show",
        "show dump mode, settings, crashkernel reservation, state and problems",
    ),
    Command(
        "status",
        "kdumpd.cli.readiness_commands:status",
        "print whether kdump is ready; exit 0 when ready, 3 when not",
    ),
    Command("load", "kdumpd.cli.arming:load", "load the capture kernel (or register fadump)"),
    Command("unload", "kdumpd.cli.arming:unload", "unload the capture kernel"),
    Command("reload", "kdumpd.cli.arming:reload", "unload, then load"),
    Command("try-reload", "kdumpd.cli.arming:try_reload", "reload only if loaded (condreload)"),
    Command(
        "symlinks",
        "kdumpd.cli.arming:symlinks",
        "link /var/lib/kdump/vmlinuz and initrd.img to a kernel version",
        "KERNEL-VERSION",
    ),
    Command("savecore", "kdumpd.cli.savecore:savecore", "save /proc/vmcore (capture kernel)"),
    Command("propagate", "kdumpd.cli.arming:propagate", "send the SSH key to the SSH target"),
    Command(
        "default-enable",
        "kdumpd.cli.readiness_commands:default_enable",
        "check the conditions for enabling kdump by default; exit 0 if all hold, else 3",
    ),
)
ALIASES = {"condreload": "try-reload", "-h": "help", "--help": "help"}
BY_NAME = {c.name: c for c in COMMANDS}


class NotAvailableError(KdumpdError):
    """The subcommand is registered but its implementation is not part of this build yet."""


def usage(prog: str) -> str:
    names = "|".join(c.name for c in COMMANDS)
    lines = [f"Usage: {prog} [--root DIR] [--json] {{{names}}}"]
    for c in COMMANDS:
        lines.append(f"  {(c.name + ' ' + c.usage).strip():16}  {c.summary}")
    lines += [
        "Options:",
        "  --root DIR        read /proc, /sys, /boot, /etc and /var under DIR (or $KDUMPD_ROOT)",
        "  --json            JSON output (show, status, test, default-enable)",
    ]
    return "\n".join(lines)


def help_command(ctx: Context, args: list[str]) -> int:
    print(usage(ctx.prog))
    return EXIT_OK


def resolve(command: Command) -> Handler:
    module_name, _, func = command.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        module = None
    handler = getattr(module, func, None)
    if not callable(handler):
        raise NotAvailableError(
            f"{command.name}: not available yet in this kdumpd build ({command.target} is missing)"
        )
    return handler  # type: ignore[no-any-return]


def parse_globals(argv: list[str]) -> tuple[str | None, bool, list[str]]:
    """(--root value, --json, remaining words). Words after ``--`` are never options."""
    root: str | None = None
    as_json = False
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            rest += argv[i:]
            break
        if arg == "--json":
            as_json = True
        elif arg == "--root":
            if i + 1 >= len(argv):
                raise UsageError("--root needs a directory")
            i += 1
            root = argv[i]
        elif arg.startswith("--root="):
            root = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return root, as_json, rest


def run(argv: list[str], prog: str = "kdump-config") -> int:
    root_opt, as_json, rest = parse_globals(argv)
    if not rest:
        print(usage(prog), file=sys.stderr)
        return EXIT_USAGE
    name = ALIASES.get(rest[0], rest[0])
    command = BY_NAME.get(name)
    if command is None:
        raise UsageError(f"unknown command {rest[0]!r}\n{usage(prog)}")
    root = SystemRoot.from_env(root_opt)
    if not root.base.is_dir():
        raise UsageError(f"--root {root.base}: not a directory")
    return resolve(command)(Context(root, as_json, prog), rest[1:])


def main(argv: list[str] | None = None) -> int:
    prog = "kdump-config"
    try:
        return run(sys.argv[1:] if argv is None else argv, prog)
    except KdumpdError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE
    except Exception as exc:  # a bug: one line for the admin, the traceback on request
        if os.environ.get("KDUMPD_DEBUG"):
            raise
        print(
            f"{prog}: internal error: {type(exc).__name__}: {exc} (set KDUMPD_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
