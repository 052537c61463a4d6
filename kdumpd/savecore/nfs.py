"""The NFS target: mount the export on KDUMP_COREDIR as kdump-tools does, write, unmount.

kdump-tools runs ``mount -t nfs -o nolock,tcp,soft,timeo=$NFS_TIMEO,retrans=$NFS_RETRANS
$NFS $KDUMP_COREDIR`` up to NFS_MOUNT_RETRY times, 3 s apart.  ``soft`` matters in a capture
kernel: a server that goes away makes writes fail (and the dump be reported incomplete) instead
of hanging the capture forever.  The mount command is an argv; the export and the mount point
come from the validated config and are never pasted into a shell.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from kdumpd.config import NfsTarget
from kdumpd.errors import KdumpdError

RETRY_DELAY = 3.0

Runner = Callable[[list[str]], tuple[int, str]]


class NfsMountError(KdumpdError):
    """The NFS export could not be mounted (or unmounted)."""


def run_command(argv: list[str]) -> tuple[int, str]:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return 127, f"{argv[0]}: not installed"
    return proc.returncode, (proc.stderr or proc.stdout).strip()


def mount_argv(nfs: NfsTarget, mountpoint: Path, timeo: int, retrans: int) -> list[str]:
    options = f"nolock,tcp,soft,timeo={timeo},retrans={retrans}"
    return ["mount", "-t", "nfs", "-o", options, str(nfs), str(mountpoint)]


@contextmanager
def mounted(
    nfs: NfsTarget,
    mountpoint: Path,
    *,
    timeo: int,
    retrans: int,
    attempts: int,
    runner: Runner = run_command,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> Iterator[Path]:
    """Mount ``nfs`` on ``mountpoint`` for the duration of the block."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    argv = mount_argv(nfs, mountpoint, timeo, retrans)
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        rc, err = runner(argv)
        if rc == 0:
            break
        if attempt == attempts:
            raise NfsMountError(f"mount {nfs} on {mountpoint} failed {attempts} times: {err}")
        log(f"kdumpd-capture: mount {nfs} failed ({err}); retry in {RETRY_DELAY:.0f} s")
        sleep(RETRY_DELAY)
    try:
        yield mountpoint
    finally:
        rc, err = runner(["umount", str(mountpoint)])
        if rc != 0:
            log(f"kdumpd-capture: umount {mountpoint} failed: {err}")
