"""The debconf question "Should kdump be enabled by default?" answered by a person at a terminal.

In the Debian 12 chroot, kdumpd is installed or reconfigured under a real pseudo-terminal with
debconf's readline frontend; the test waits for the question, types like a person would and
checks what USE_KDUMP became. A question that never shows fails with the terminal's transcript.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from .debroot import ENV, cached_debs, chroot, install_debs, use_kdump
from .terminal import Terminal

pytestmark = pytest.mark.system

QUESTION = r"Should kdump be enabled by default\? \[yes/no\] "
EXPLANATION = "If you choose this option, the kdump capture kernel is loaded at every boot"
# GNU readline for debconf (it shows the default, ready to accept with Enter; minbase has only
# perl's stub, which shows none) and apt-utils (apt then preconfigures packages before
# unpacking them, as on most Debian systems).
TTY_DEBS = ("libterm-readline-gnu-perl", "apt-utils")


def at_terminal(root: Path, script: str, frontend: str | None = None) -> Terminal:
    # No DEBIAN_FRONTEND unless asked: it would override dpkg-reconfigure's -f.
    env = {key: value for key, value in ENV.items() if key != "DEBIAN_FRONTEND"}
    env["TERM"] = "dumb"
    if frontend:
        env["DEBIAN_FRONTEND"] = frontend
    return Terminal(["chroot", str(root), "/bin/sh", "-c", script], env)


def flat(text: str) -> str:
    """Text with its line wrapping undone."""
    return " ".join(text.split())


@pytest.mark.parametrize(
    "frontend, installed, typed, expected",
    [("readline", "true", "no", "USE_KDUMP=0"), ("teletype", "false", "yes", "USE_KDUMP=1")],
)
def test_reconfigure_asks_and_the_typed_answer_becomes_use_kdump(
    root: Path, frontend: str, installed: str, typed: str, expected: str
) -> None:
    chroot(root, f"echo 'kdumpd kdumpd/use_kdump boolean {installed}' | debconf-set-selections")
    chroot(root, "dpkg -i /root/kdumpd.deb")
    term = at_terminal(root, f"dpkg-reconfigure -f {frontend} kdumpd")
    term.expect(QUESTION)
    term.type(f"{typed}\r")
    assert term.wait() == 0, term.text
    assert EXPLANATION in flat(term.text)
    assert use_kdump(root) == expected


def test_reconfigure_offers_what_the_file_says(root: Path) -> None:
    """USE_KDUMP edited by hand: dpkg-reconfigure offers the file's setting, not the old answer."""
    install_debs(root, cached_debs("tty", TTY_DEBS))
    chroot(root, "echo 'kdumpd kdumpd/use_kdump boolean true' | debconf-set-selections")
    chroot(root, "dpkg -i /root/kdumpd.deb")
    conf = root / "etc/default/kdump-tools"
    conf.write_text(conf.read_text().replace("USE_KDUMP=1", "USE_KDUMP=0"))
    term = at_terminal(root, "dpkg-reconfigure -f readline kdumpd")
    assert term.expect(QUESTION + "(yes|no)").group(1) == "no"
    term.type("\r")
    assert term.wait() == 0, term.text
    assert use_kdump(root) == "USE_KDUMP=0"
    assert "kdumpd/use_kdump: false" in chroot(root, "debconf-show kdumpd").stdout


@pytest.mark.parametrize(
    "command", ["dpkg -i /root/kdumpd.deb", "apt-get install --yes /root/kdumpd.deb"]
)
def test_first_install_offers_the_default_enable_decision(root: Path, command: str) -> None:
    install_debs(root, cached_debs("tty", TTY_DEBS))
    term = at_terminal(root, command, frontend="readline")
    shown = term.expect(QUESTION + "(yes|no)").group(1)
    term.type("\r")  # accept the default shown
    assert term.wait() == 0, term.text
    assert len(term.text.split("Should kdump be enabled by default?")) == 2, term.text  # once
    # What kdump-config's check decides on this machine (its status; the reasons are printed).
    check = chroot(root, "kdump-config default-enable", check=False)
    assert check.returncode in (0, 3), check.stdout + check.stderr
    decided = "yes" if check.returncode == 0 else "no"
    assert shown == decided, f"{check.stdout}\n{term.text}"
    assert use_kdump(root) == ("USE_KDUMP=1" if decided == "yes" else "USE_KDUMP=0")
