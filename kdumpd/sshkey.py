"""``kdump-config propagate``: make (if needed) the dump key and install it on the SSH target.

As kdump-tools does: an RSA key without passphrase at ``SSH_KEY`` (default
``/root/.ssh/kdump_id_rsa``), then ``ssh-copy-id``. Commands are argument lists; the target comes
from the validated config (``user@host``, no shell metacharacters).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kdumpd.config import Config
from kdumpd.errors import ConfigError, KdumpdError
from kdumpd.system import SystemRoot

Runner = Callable[[Sequence[str]], tuple[int, str]]


class PropagateError(KdumpdError):
    """Generating or copying the key failed."""


def run_command(argv: Sequence[str], timeout: float = 20.0) -> tuple[int, str]:
    """Run without a shell, no terminal; (exit status, combined output). The timeout stays
    below the 25 s a bus client waits, so PropagateKey answers before its caller gives up."""
    try:
        proc = subprocess.run(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        return 127, f"{argv[0]}: not installed"
    except subprocess.TimeoutExpired:
        return 124, f"{argv[0]}: no answer within {timeout:.0f} s"
    return proc.returncode, proc.stdout.strip()


@dataclass(frozen=True)
class Propagated:
    key: str
    target: str
    generated: bool

    def messages(self) -> list[str]:
        lines = ["Need to generate a new ssh key..."] if self.generated else []
        return [*lines, f"propagated ssh key {self.key} to server {self.target}"]


def propagate_key(
    root: SystemRoot, config: Config, runner: Runner = run_command, batch: bool = False
) -> Propagated:
    """Generate ``SSH_KEY`` when missing and copy its public half to ``SSH``.

    ``batch`` is for callers without a terminal (the daemon): ssh then fails at once instead of
    asking for a password, and an unknown host key is accepted on first use.
    """
    if config.ssh is None:
        raise ConfigError(f"{config.path}: SSH is not set: propagate needs SSH=user@host")
    key = root.path(config.ssh_key)
    generated = False
    if not key.exists():
        key.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        status, out = runner(["ssh-keygen", "-q", "-t", "rsa", "-N", "", "-f", str(key)])
        if status != 0:
            raise PropagateError(f"ssh-keygen could not create {config.ssh_key}: {out}")
        generated = True
    pub = key.with_name(f"{key.name}.pub")
    if not pub.exists():
        # ssh-copy-id copies the .pub file; a lost one is derived from the private key rather
        # than making the admin throw away a key the dump server may already trust.
        status, out = runner(["ssh-keygen", "-y", "-f", str(key)])
        if status != 0 or not out.startswith("ssh-"):
            raise PropagateError(f"cannot derive {config.ssh_key}.pub from {config.ssh_key}: {out}")
        pub.write_text(out + "\n")
    argv = ["ssh-copy-id", "-i", str(pub)]
    if batch:
        argv += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new"]
    status, out = runner([*argv, str(config.ssh)])
    if status != 0:
        last = out.splitlines()[-1] if out else f"exit status {status}"
        hint = " (run 'kdump-config propagate' in a terminal to type the password)" if batch else ""
        raise PropagateError(f"could not copy {config.ssh_key}.pub to {config.ssh}: {last}{hint}")
    return Propagated(config.ssh_key, str(config.ssh), generated)
