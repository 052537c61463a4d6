"""A qemu (TCG) guest for the full-system test: serial console log plus the virtio-serial agent.

The console (ttyS0) is written to a file and read back line by line, each line stamped with the
host's monotonic clock when it arrived, so phases can be timed from what the kernels print. The
guest agent (``guest_agent.py``) answers commands on a virtio-serial port whose host side is a
unix socket; it greets with its boot id each time the normal system comes up.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.qemu import direct_boot_argv

from .image import AGENT_PORT, BaseImage


class GuestError(RuntimeError):
    """The guest did not do what the test waited for, in time."""


@dataclass(frozen=True)
class ConsoleLine:
    t: float  # host time.monotonic() when the line was read
    text: str


@dataclass(frozen=True)
class Result:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"rc={self.rc}\n--- stdout\n{self.out}--- stderr\n{self.err}"


class Guest:
    def __init__(self, base: BaseImage, disk: Path, workdir: Path, append: str) -> None:
        self.workdir = workdir
        self.console_path = workdir / "console.log"
        self.lines: list[ConsoleLine] = []
        self._lock = threading.Lock()
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._next_id = 0
        self._stop = threading.Event()
        sock_path = workdir / "agent.sock"
        # Empty, not just present: qemu opens the serial file only after the agent socket listens,
        # so the reader could otherwise take the previous qemu's console for this one's.
        self.console_path.write_bytes(b"")
        boot = direct_boot_argv(
            memory="2G",
            kernel=base.kernel,
            initrd=base.initrd,
            append=append,
            serial_log=self.console_path,
        )
        cmd = [
            "nice",
            *boot,
            "-nodefaults",
            # A guest reboot ends qemu, and the harness starts a new one, as a power cycle: boots
            # after in-process reboots under TCG grew slower with no guest code involved.
            "-no-reboot",
            "-drive",
            f"file={disk},format=qcow2,if=virtio,cache=unsafe",
            "-device",
            "virtio-rng-pci",
            "-device",
            "virtio-serial-pci",
            "-chardev",
            f"socket,id=agent,path={sock_path},server=on,wait=off",
            "-device",
            f"virtserialport,chardev=agent,name={AGENT_PORT}",
        ]
        self.started = time.monotonic()
        self.exited: float | None = None  # set by wait_exit()
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.sock = self._connect(sock_path)
        threading.Thread(target=self._read_console, daemon=True).start()
        threading.Thread(target=self._read_agent, daemon=True).start()

    # --- plumbing -----------------------------------------------------------------------------

    def _connect(self, path: Path) -> socket.socket:
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode(errors="replace") if self.proc.stdout else ""
                raise GuestError(f"qemu exited with status {self.proc.returncode}: {out}")
            try:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.connect(str(path))
                return sock
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _read_console(self) -> None:
        with self.console_path.open("rb") as f:
            partial = b""
            while not self._stop.is_set():
                chunk = f.read(65536)
                if not chunk:
                    time.sleep(0.05)
                    continue
                now = time.monotonic()
                partial += chunk
                *complete, partial = partial.split(b"\n")
                with self._lock:
                    for raw in complete:
                        text = raw.decode(errors="replace").rstrip("\r")
                        self.lines.append(ConsoleLine(now, text))

    def _read_agent(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            try:
                chunk = self.sock.recv(1 << 20)
            except OSError:
                return
            if not chunk:
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                try:
                    self._replies.put(json.loads(line))
                except ValueError:
                    continue  # noise from a port opened mid-line by a dying boot

    # --- console ------------------------------------------------------------------------------

    def mark(self) -> int:
        """Index of the next console line: wait_console(after=mark) sees only newer lines."""
        with self._lock:
            return len(self.lines)

    def wait_console(self, pattern: str, timeout: float, after: int = 0) -> tuple[int, ConsoleLine]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        index = after
        while True:
            with self._lock:
                new = self.lines[index:]
            for line in new:
                if regex.search(line.text):
                    return index, line
                index += 1
            if self.proc.poll() is not None:
                raise GuestError(
                    f"qemu exited (status {self.proc.returncode}) waiting for {pattern!r}"
                )
            if time.monotonic() > deadline:
                raise GuestError(f"no console line matching {pattern!r} within {timeout:.0f} s")
            time.sleep(0.05)

    def console_text(self, after: int = 0, until: int | None = None, timed: bool = False) -> str:
        """The console lines; ``timed`` prefixes each with the host's seconds since qemu started,
        which, unlike the guest's printk times, run on across the crash and the reboots."""
        with self._lock:
            lines = self.lines[after:until]
        if timed:
            return "\n".join(f"{line.t - self.started:9.3f} | {line.text}" for line in lines)
        return "\n".join(line.text for line in lines)

    # --- agent --------------------------------------------------------------------------------

    def wait_hello(self, timeout: float) -> tuple[float, dict[str, Any]]:
        """Wait for the agent of a new boot; returns (host time, greeting)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                msg = self._replies.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise GuestError(
                    f"the guest agent did not come up within {timeout:.0f} s"
                ) from None
            if "hello" in msg:
                return time.monotonic(), msg
            if time.monotonic() > deadline:
                raise GuestError(f"the guest agent did not come up within {timeout:.0f} s")

    def _request(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        self._next_id += 1
        request["id"] = self._next_id
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        deadline = time.monotonic() + timeout + 10
        while True:
            try:
                msg = self._replies.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise GuestError(f"no answer from the guest agent to {request!r}") from None
            if msg.get("id") == request["id"]:
                return msg
            if "hello" in msg:
                raise GuestError(f"the guest rebooted while running {request!r}")

    def sh(self, script: str, user: str | None = None, timeout: float = 120) -> Result:
        msg = self._request({"sh": script, "user": user, "timeout": timeout}, timeout)
        return Result(msg["rc"], msg["out"], msg["err"])

    def fire(self, script: str) -> None:
        """Send a command whose answer never comes (it crashes or powers off the guest)."""
        self._next_id += 1
        request = {"id": self._next_id, "sh": script, "user": None, "timeout": 600}
        self.sock.sendall(json.dumps(request).encode() + b"\n")

    def put(self, path: str, data: bytes) -> None:
        msg = self._request({"put": path, "data": base64.b64encode(data).decode()}, 60)
        if msg["rc"] != 0:
            raise GuestError(f"writing {path} in the guest failed: {msg['err']}")

    # --- end ----------------------------------------------------------------------------------

    def wait_exit(self, timeout: float) -> int:
        """Wait for qemu to end (a poweroff, or a reboot: qemu runs with -no-reboot)."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise GuestError(f"qemu still running after {timeout:.0f} s") from None
        self.exited = time.monotonic()
        # The console reader polls the log every 50 ms: let it take qemu's last lines.
        time.sleep(0.2)
        return code

    def close(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.sock.close()
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> Guest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def extract_file(disk: Path, guest_path: str, dest: Path, scratch: Path) -> None:
    """Copy one file out of the (powered-off) guest disk with debugfs, without mounting it."""
    raw = scratch / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(disk), str(raw)], check=True)
    try:
        done = subprocess.run(
            ["debugfs", "-R", f"dump -p {guest_path} {dest}", str(raw)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0 or not dest.exists():
            raise GuestError(f"debugfs could not copy {guest_path}: {done.stderr.strip()}")
    finally:
        os.unlink(raw)
