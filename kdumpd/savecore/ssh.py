"""The SSH target: the dump goes out as a flattened stream on ``ssh``'s standard input.

Every connection uses the configured key, ``BatchMode=yes`` (never wait for a password nobody
will type in a capture kernel) and ``StrictHostKeyChecking=yes`` (a dump is kernel memory: never
send it to a host whose key is unknown).  Creating the directory is retried SSH_KDUMP_RETRY times,
3 s apart, as kdump-tools does while the network settles.

ssh hands its remote command to the remote user's shell, so that string cannot be avoided; it is
built only from fixed words and :func:`shlex.quote`-d arguments, never by pasting config values.
"""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import IO, NamedTuple

from kdumpd.config import SshTarget as SshConfig
from kdumpd.dumpfile.flat import FlatSink
from kdumpd.dumpfile.sink import Sink
from kdumpd.errors import KdumpdError
from kdumpd.savecore import layout, space
from kdumpd.savecore.targets import BudgetSink

RETRY_DELAY = 3.0
SSH_UNREACHABLE = 255  # ssh's own exit status when the connection itself failed
CONNECT_TIMEOUT = 20


class SshTargetError(KdumpdError):
    """The SSH target refused or lost the dump."""


def ssh_argv(cfg: SshConfig, key: str, remote: Sequence[str | Sequence[str]]) -> list[str]:
    """``ssh`` with our fixed options; ``remote`` is a list of argv joined with ``&&``.

    A plain string in ``remote`` is a fixed shell word chosen here (``umask 077``), never data.
    """
    parts = [r if isinstance(r, str) else shlex.join(r) for r in remote]
    return [
        "ssh",
        "-i",
        key,
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT}",
        "-o",
        "ServerAliveInterval=15",
        "--",
        str(cfg),
        " && ".join(parts),
    ]


class SshResult(NamedTuple):
    status: int
    err: str  # stderr, stripped
    out: str = ""  # stdout: only ``df`` prints anything the target reads


Runner = Callable[[list[str], bytes | None], SshResult]


def run_ssh(argv: list[str], data: bytes | None) -> SshResult:
    """Run one ssh command (feeding ``data`` on stdin)."""
    try:
        proc = subprocess.run(argv, input=data or b"", capture_output=True, check=False)
    except FileNotFoundError:
        return SshResult(127, "ssh: not installed")
    text = (proc.stderr.decode("utf-8", "replace").strip(), proc.stdout.decode("utf-8", "replace"))
    return SshResult(proc.returncode, *text)


class _StreamedDump:
    """The ssh process that writes the remote ``dump-incomplete`` from its stdin."""

    def __init__(self, argv: list[str], budget: int | None) -> None:
        # ssh's messages go to a file: a pipe nobody reads could fill up and stall the dump
        self.errors: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self.errors
            )
        except FileNotFoundError as exc:
            raise SshTargetError("ssh: not installed") from exc
        assert self.proc.stdin is not None
        stream = FlatSink(self.proc.stdin.fileno(), f"ssh {argv[-2]}")
        self.sink: Sink = stream if budget is None else BudgetSink(stream, budget)

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(OSError):  # ssh already gone: its status below says why
            self.proc.stdin.close()
        rc = self.proc.wait()
        self.errors.seek(0)
        text = self.errors.read().decode("utf-8", "replace").strip()
        self.errors.close()
        if rc != 0:
            raise SshTargetError(f"ssh: remote write of the dump failed (exit {rc}): {text}")


class SshDumpTarget:
    kind = "ssh"
    flattened = True

    def __init__(
        self,
        cfg: SshConfig,
        key: str,
        coredir: str,
        host: str,
        attempts: int,
        runner: Runner = run_ssh,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.cfg = cfg
        self.key = key
        self.coredir = PurePosixPath(coredir)
        self.host = host
        self.attempts = max(1, attempts)
        self.runner = runner
        self.sleep = sleep
        self.dir_id = ""
        self.stamp = ""
        self.where = f"{cfg}:{coredir}"

    @property
    def directory(self) -> PurePosixPath:
        return self.coredir / self.dir_id

    def _try(self, remote: Sequence[str | Sequence[str]], data: bytes | None = None) -> SshResult:
        """Run a remote command, retrying while the connection itself fails."""
        argv = ssh_argv(self.cfg, self.key, remote)
        for attempt in range(1, self.attempts + 1):
            result = self.runner(argv, data)
            rc, err = result.status, result.err
            if rc != SSH_UNREACHABLE:
                return result
            if attempt < self.attempts:
                print(
                    f"kdumpd-capture: {self.cfg} unreachable ({err}); "
                    f"retry {attempt}/{self.attempts - 1} in {RETRY_DELAY:.0f} s",
                    flush=True,
                )
                self.sleep(RETRY_DELAY)
        raise SshTargetError(f"{self.cfg}: unreachable after {self.attempts} attempts: {err}")

    def _run(self, remote: Sequence[str | Sequence[str]], data: bytes | None = None) -> None:
        rc, err, _ = self._try(remote, data)
        if rc != 0:
            raise SshTargetError(f"{self.cfg}: {err or f'remote command failed ({rc})'}")

    def prepare(self, when: float) -> None:
        self._run([["mkdir", "-p", "--", str(self.coredir)]])
        for stamp in layout.candidate_stamps(when):
            name = layout.dir_name(stamp, self.host)
            path = str(self.coredir / name)
            # `test` fails silently when the name is taken (then the next minute is tried);
            # mkdir without -p fails loudly for any other reason
            rc, err, _ = self._try([["test", "!", "-e", path], ["mkdir", "-m", "700", "--", path]])
            if rc == 1 and not err:
                continue
            if rc != 0:
                raise SshTargetError(f"{self.cfg}: cannot create {path}: {err}")
            self.dir_id, self.stamp = name, stamp
            self.where = f"{self.cfg}:{self.directory}"
            return
        raise SshTargetError(f"{self.cfg}: no free dump directory name under {self.coredir}")

    def space(self) -> space.SpacePlan:
        """The remote file system's free space, from POSIX ``df -P -k`` (GNU, busybox, BSD).

        kdump-tools sends the stream whatever the space: a full dump server then has no room
        for the next host's dump either.  Here the stream gets the same budget as a local dump.
        """
        rc, err, out = self._try([["df", "-P", "-k", "--", str(self.directory)]])
        if rc != 0:
            raise space.SpaceError(
                f"{self.cfg}:{self.directory}: cannot read free space: {err or f'df exit {rc}'}"
            )
        free, size = space.parse_df(out, f"{self.cfg}:{self.directory}")
        return space.plan_space(free, size, 0)

    def write_file(self, name: str, data: bytes) -> None:
        final = str(self.directory / name)
        tmp = str(self.directory / f".{name}.tmp")
        self._run(
            [
                "umask 077",
                "cat > " + shlex.quote(tmp),
                ["sync", "--", tmp],
                ["mv", "-f", "--", tmp, final],
            ],
            data,
        )

    def open_dump(self, budget: int | None) -> _StreamedDump:
        path = str(self.directory / layout.INCOMPLETE_NAME)
        return _StreamedDump(
            ssh_argv(self.cfg, self.key, ["umask 077", "cat > " + shlex.quote(path)]), budget
        )

    def commit(self) -> str:
        src = str(self.directory / layout.INCOMPLETE_NAME)
        name = layout.dump_file_name(self.stamp)
        self._run(
            [
                ["sync", "--", src],
                ["mv", "--", src, str(self.directory / name)],
                ["sync", "--", str(self.directory)],
            ]
        )
        return name

    def retention(self, keep: int) -> list[str]:
        return []  # local only, as in kdump-tools
