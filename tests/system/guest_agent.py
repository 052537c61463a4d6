#!/usr/bin/python3
"""Guest side of the full-system test: runs the host's commands, talking over virtio-serial.

Installed in the test image as /usr/local/sbin/kdumpd-test-agent and started by a unit bound to
the virtio port. One JSON object per line each way. On start it sends
``{"hello": BOOT_ID, "uptime": SECONDS}``; then for each request ``{"id": N, "sh": SCRIPT,
"user": NAME|null, "timeout": SECONDS}`` it runs ``/bin/sh -c SCRIPT`` (as NAME through runuser
when given) and answers ``{"id": N, "rc": RC, "out": TEXT, "err": TEXT}``. A request
``{"id": N, "put": PATH, "data": BASE64}`` writes a file. The serial console stays free for the
kernel's messages. Only the test image has this: it is a root shell on a host-side socket.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def run(request: dict[str, Any]) -> dict[str, Any]:
    if "put" in request:
        path = Path(request["put"])
        path.write_bytes(base64.b64decode(request["data"]))
        return {"rc": 0, "out": "", "err": ""}
    cmd = ["/bin/sh", "-c", request["sh"]]
    if request.get("user"):
        cmd = ["runuser", "-u", request["user"], "--", *cmd]
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=request.get("timeout", 120),
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        return {"rc": -1, "out": "", "err": f"agent: timed out after {e.timeout} s"}
    return {
        "rc": done.returncode,
        "out": done.stdout.decode(errors="replace"),
        "err": done.stderr.decode(errors="replace"),
    }


def main() -> int:
    port = open(sys.argv[1], "r+b", buffering=0)  # noqa: SIM115 - lives as long as the agent

    def send(obj: dict[str, Any]) -> None:
        port.write(json.dumps(obj).encode() + b"\n")

    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    send({"hello": boot_id, "uptime": uptime})
    buffer = b""
    while True:
        chunk = port.read(65536)
        if not chunk:  # host side not connected: virtio ports then read as end-of-file
            time.sleep(0.2)
            continue
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if not line.strip():
                continue
            request: dict[str, Any] = {}
            try:
                request = json.loads(line)
                answer = run(request)
            except Exception as e:  # report anything to the host rather than die
                answer = {"rc": -2, "out": "", "err": f"agent: {type(e).__name__}: {e}"}
            answer["id"] = request.get("id")
            send(answer)


if __name__ == "__main__":
    sys.exit(main())
