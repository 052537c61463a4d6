"""``kdump-config propagate`` and ``PropagateKey()`` succeeding against a real sshd on loopback.

The client machine's root already logs in to the dump server with its default identity
(``~/.ssh/id_ed25519``, as an admin's root often does), and ``SSH_KEY`` does not exist yet. Our
code must generate ``SSH_KEY`` and install its public half with ``ssh-copy-id``; afterwards
``ssh -i SSH_KEY`` alone (no config, no agent, no other identity) must log in. The server's
``/root/.ssh`` and the client's are test directories bind-mounted in private mount namespaces
(tests/vm/sshd.py), so ssh-copy-id really appends to the remote ``~/.ssh/authorized_keys`` and
the host's own keys are never read or written. The port reaches ssh through the client's
``~/.ssh/config``: kdump-tools' ``SSH`` is ``user@host`` only.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from busenv import BIN, MANAGER, Bus, _stop, start_kdumpd
from machines import SHIPPED_CONFIG, Machine, build_machine
from vm.sshd import SshServer, run_with_ssh_dir, ssh_dir_prefix

CONFIG = "/etc/default/kdump-tools"
SSH_KEY = "/root/.ssh/kdump_id_rsa"  # kdump-tools' default


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SshServer]:
    """sshd whose root accepts the client's default identity (the bootstrap login)."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)  # no agent: keys come from files only
    s = SshServer(tmp_path / "sshd")
    s.base.mkdir()
    s.start(own_home_ssh=True)
    shutil.copy(s.key, s.client_dir / "id_ed25519")
    (s.client_dir / "id_ed25519").chmod(0o600)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def machine(tmp_path: Path, server: SshServer) -> Machine:
    m = build_machine(tmp_path / "machine", loaded=False)
    m.write(CONFIG, SHIPPED_CONFIG + f'SSH="root@{server.address}"\n')
    assert not (m.root / SSH_KEY.lstrip("/")).exists()
    return m


def _login_with(server: SshServer, key: Path) -> subprocess.CompletedProcess[str]:
    """``ssh -i key`` and nothing else: no ssh config, no default identities, no agent."""
    argv = ["ssh", "-F", "/dev/null", "-i", str(key), "-o", "IdentitiesOnly=yes"]
    argv += ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    argv += ["-o", f"UserKnownHostsFile={server.client_dir / 'known_hosts'}"]
    argv += ["-p", str(server.port), f"root@{server.address}", "true"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)


def _assert_installed(server: SshServer, key: Path) -> None:
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = key.with_name(key.name + ".pub").read_text().strip()
    authorized = (server.server_ssh / "authorized_keys").read_text().splitlines()
    assert authorized.count(public) == 1
    login = _login_with(server, key)
    assert login.returncode == 0, login.stderr


def test_kdump_config_propagate_generates_and_installs_the_key(
    server: SshServer, machine: Machine, tmp_path: Path
) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    assert _login_with(server, stranger).returncode != 0  # the check tells keys apart

    argv = [str(BIN / "kdump-config"), "--root", str(machine.root), "propagate", "--local"]
    first = run_with_ssh_dir(server.client_dir, argv, timeout=60)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "Need to generate a new ssh key..." in first.stdout
    expected = f"propagated ssh key {SSH_KEY} to server root@{server.address}"
    assert first.stdout.splitlines()[-1] == expected
    key = machine.root / SSH_KEY.lstrip("/")
    _assert_installed(server, key)

    # Again: the key is kept and not appended twice.
    private = key.read_bytes()
    again = run_with_ssh_dir(server.client_dir, argv, timeout=60)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Need to generate" not in again.stdout
    assert again.stdout.splitlines()[-1] == expected
    assert key.read_bytes() == private
    _assert_installed(server, key)


@pytest.mark.bus
def test_daemon_propagate_key_generates_and_installs_the_key(
    bus: Bus, server: SshServer, machine: Machine
) -> None:
    # The daemon sees the client's /root/.ssh as its own, as kdumpd.service's root does.
    daemon = start_kdumpd(bus, machine.root, prefix=ssh_dir_prefix(server.client_dir))
    try:
        done = bus.gdbus_call(f"{MANAGER}.PropagateKey")
    finally:
        _stop(daemon)
    assert done.returncode == 0, done.stderr
    expected = f"propagated ssh key {SSH_KEY} to server root@{server.address}"
    assert done.stdout.strip() == f"('{expected}',)"
    _assert_installed(server, machine.root / SSH_KEY.lstrip("/"))
