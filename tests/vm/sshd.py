"""A real OpenSSH server for the SSH target tests, on a loopback address, with its own keys.

It accepts only the test's client key, for root, and writes where the test says (KDUMP_COREDIR
is a directory of the test).  ``client_dir`` holds what a machine's ``/root/.ssh`` holds for a
kdump SSH target: the private key, ``known_hosts`` with this server's host key, and a ``config``
naming the port (kdump-tools' SSH variable has no port; an ssh config is how users set one).
With ``own_home_ssh`` the server's root has its own ``~/.ssh`` (``server_ssh``, bind-mounted on
/root/.ssh in sshd's private mount namespace), so what ``ssh-copy-id`` appends to the remote
``~/.ssh/authorized_keys`` lands there, is honoured, and the host's /root/.ssh is never touched.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port(address: str) -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def _keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kdumpd-test", "-f", str(path)],
        check=True,
    )
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class SshServer:
    base: Path
    address: str = "127.0.0.1"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_dir(self) -> Path:
        return self.base / "client"

    @property
    def key(self) -> Path:
        return self.client_dir / "kdump_id_rsa"

    @property
    def server_ssh(self) -> Path:
        return self.base / "server_ssh"

    def start(self, seen_as: str | None = None, own_home_ssh: bool = False) -> None:
        """Start sshd; ``seen_as`` is the host name clients use (10.0.2.2 from a qemu guest)."""
        self.client_dir.mkdir(parents=True, exist_ok=True)
        self.client_dir.chmod(0o700)
        self.port = self.port or free_port(self.address)
        host_pub = _keygen(self.base / "host_ed25519")
        client_pub = _keygen(self.key)
        authorized = self.base / "authorized_keys"
        prefix: list[str] = []
        if own_home_ssh:
            self.server_ssh.mkdir(mode=0o700, exist_ok=True)
            authorized = self.server_ssh / "authorized_keys"
            prefix = ssh_dir_prefix(self.server_ssh)
        authorized.write_text(client_pub + "\n")
        name = seen_as or self.address
        host_key = " ".join(host_pub.split()[:2])
        (self.client_dir / "known_hosts").write_text(f"[{name}]:{self.port} {host_key}\n")
        (self.client_dir / "config").write_text(
            f"Host {name}\n  Port {self.port}\n  UserKnownHostsFile ~/.ssh/known_hosts\n"
        )
        config = self.base / "sshd_config"
        config.write_text(
            f"Port {self.port}\n"
            f"ListenAddress {self.address}\n"
            f"HostKey {self.base / 'host_ed25519'}\n"
            f"PidFile {self.base / 'sshd.pid'}\n"
            f"AuthorizedKeysFile {'.ssh/authorized_keys' if own_home_ssh else authorized}\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "LogLevel ERROR\n"
        )
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen(
            [*prefix, SSHD, "-D", "-e", "-f", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.base / "sshd.log", "wb"),  # noqa: SIM115 - sshd owns it
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited: {(self.base / 'sshd.log').read_text()}")
            with socket.socket() as s:
                if s.connect_ex((self.address, self.port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("sshd did not start listening within 10 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def client_files(self) -> dict[str, str]:
        """The guest's /root/.ssh files (for fw_cfg)."""
        return {
            "ssh_key": self.key.read_text(),
            "known_hosts": (self.client_dir / "known_hosts").read_text(),
            "ssh_config": (self.client_dir / "config").read_text(),
        }


def ssh_dir_prefix(ssh_dir: Path) -> list[str]:
    """The command prefix that runs a command (same process: it is exec'd) with ``ssh_dir``
    bind-mounted on /root/.ssh in a private mount namespace."""
    helper = (
        "import os, subprocess, sys; "
        "subprocess.run(['mount', '--bind', sys.argv[1], '/root/.ssh'], check=True); "
        "os.execvp(sys.argv[2], sys.argv[2:])"
    )
    Path("/root/.ssh").mkdir(mode=0o700, exist_ok=True)
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    return [*unshare, "python3", "-c", helper, str(ssh_dir)]


def run_with_ssh_dir(
    client_dir: Path, argv: list[str], **kw: object
) -> subprocess.CompletedProcess[str]:
    """Run argv as root with ``client_dir`` on /root/.ssh (:func:`ssh_dir_prefix`): the real
    ssh client reads the test's key, known_hosts and config, and the host's own /root/.ssh is
    never touched."""
    env = dict(os.environ, HOME="/root")
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        [*ssh_dir_prefix(client_dir), *argv],
        capture_output=True,
        text=True,
        env=env,
        **kw,
    )
