"""A real NFS server for the NFS target test: NFS-Ganesha (userspace NFSv4), on 127.0.0.1:2049.

The kernel's own nfsd cannot run here: this machine's kernel has no nfsd file system
(``mount -t nfsd nfsd /proc/fs/nfsd`` fails with "unknown filesystem type"), so rpc.nfsd and
exportfs have nothing to drive.  Ganesha serves the same protocol from user space; a guest
reaches it through qemu's user network as 10.0.2.2:2049, where kdump-tools' mount command
(``mount -t nfs -o nolock,tcp,soft,…``) negotiates NFSv4 on the standard port.
"""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

GANESHA = "/usr/bin/ganesha.nfsd"
PORT = 2049

CONFIG = """
NFS_CORE_PARAM {{
    Protocols = 4;
    NFS_Port = {port};
    Bind_addr = 127.0.0.1;
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSV4 {{
    Graceless = true;
    RecoveryBackend = fs;
    RecoveryRoot = {base}/recovery;
}}
NFS_KRB5 {{ Active_krb5 = false; }}
EXPORT {{
    Export_Id = 1;
    Path = {export};
    Pseudo = /export;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    Protocols = 4;
    Transports = TCP;
    FSAL {{ Name = VFS; }}
}}
LOG {{ Default_Log_Level = WARN; }}
"""


@dataclass
class NfsServer:
    base: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def export(self) -> Path:
        return self.base / "export"

    def start(self) -> None:
        self.export.mkdir(parents=True)
        (self.base / "recovery").mkdir()
        conf = self.base / "ganesha.conf"
        conf.write_text(CONFIG.format(port=PORT, base=self.base, export=self.export))
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", PORT)) == 0:
                raise RuntimeError(f"127.0.0.1:{PORT} is taken: another NFS server runs here")
        self.proc = subprocess.Popen(
            [
                GANESHA,
                "-F",
                "-f",
                str(conf),
                "-L",
                str(self.base / "ganesha.log"),
                "-p",
                str(self.base / "ganesha.pid"),
                "-N",
                "NIV_WARN",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ganesha.nfsd exited: {self.log()[-2000:]}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", PORT)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError("ganesha.nfsd did not listen within 20 s")

    def log(self) -> str:
        p = self.base / "ganesha.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
