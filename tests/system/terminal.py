"""A command under a real pseudo-terminal, driven like a person at it: wait for text, type.

The child gets the pty as its controlling terminal (pty.fork), so programs that insist on a tty
(debconf's readline and teletype frontends, linux-check-removal) see one. Every byte it writes is
kept; a wait that times out fails the test with the whole transcript.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import termios
import time

import pytest

# Colour and cursor sequences: matched text is searched with them taken out.
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class Terminal:
    """A child process on the slave side of a new pty of 24 x 80."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: nothing may return into pytest
            try:
                os.execvpe(argv[0], argv, env)
            finally:
                os._exit(127)
        self.pid = pid
        self.fd = fd
        self.raw = bytearray()
        self.status: int | None = None
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))

    @property
    def text(self) -> str:
        """What the terminal showed, escape sequences and carriage returns taken out."""
        return _ESCAPES.sub("", self.raw.decode(errors="replace"))

    def _read(self, timeout: float) -> bool:
        """Read what is there within ``timeout``; False once the child closed the terminal."""
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return True
        try:
            data = os.read(self.fd, 4096)
        except OSError:  # EIO: the child side is closed
            return False
        self.raw += data
        return bool(data)

    def expect(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        """Wait for ``pattern`` in the text; fail with the transcript if it never comes."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.text)
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 1.0)):
                self.close()
                pytest.fail(f"no {pattern!r} on the terminal; it showed:\n{self.text}")

    def type(self, keys: str) -> None:
        os.write(self.fd, keys.encode())

    def wait(self, timeout: float = 60) -> int:
        """Read to the end and reap the child; its exit status (fails the test on a timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._read(min(deadline - time.monotonic(), 1.0)):
                # The terminal is closed: the child is ending.
                while time.monotonic() < deadline:
                    pid, status = os.waitpid(self.pid, os.WNOHANG)
                    if pid:
                        self.status = os.waitstatus_to_exitcode(status)
                        os.close(self.fd)
                        return self.status
                    time.sleep(0.1)
        self.close()
        pytest.fail(f"the command did not finish; the terminal showed:\n{self.text}")

    def close(self) -> None:
        """Kill the child's process group if it is still running, reap it, close the terminal."""
        if self.status is not None:
            return
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid == 0:
            os.killpg(self.pid, signal.SIGKILL)  # pty.fork made it a session (and group) leader
            _, status = os.waitpid(self.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        os.close(self.fd)
