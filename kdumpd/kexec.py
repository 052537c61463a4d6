"""Loading the crash kernel: ``kexec_file_load`` through ctypes, with a ``kexec -p`` fallback.

The kernel call sits behind :class:`KexecPort` so the arming logic (``kdumpd.arming``) runs against
a fake machine in tests; :class:`LinuxKexec` is the real thing. A failed load is turned into an
:class:`ArmError` subclass whose message says what to do, because the raw errno of
``kexec_file_load`` is famously unhelpful (``EADDRNOTAVAIL`` means both "nothing reserved" and "the
image does not fit").
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kdumpd.errors import KdumpdError
from kdumpd.system import SystemRoot

# include/uapi/linux/kexec.h
KEXEC_FILE_UNLOAD = 0x1
KEXEC_FILE_ON_CRASH = 0x2
KEXEC_FILE_NO_INITRAMFS = 0x4

# kexec_file_load's number per architecture (arch/*/entry/syscalls, include/uapi/asm-generic).
SYSCALL_NUMBERS = {"x86_64": 320, "aarch64": 294, "riscv64": 294, "s390x": 381, "ppc64le": 382}

KEXEC_BINARY = "/sbin/kexec"
METHOD_FILE_LOAD = "kexec_file_load"
METHOD_KEXEC = "kexec"


class ArmError(KdumpdError):
    """Arming or disarming failed; the message names the cause and the fix."""


class NotReservedError(ArmError):
    """No crash kernel memory is reserved (``crashkernel=`` missing or too small to be honoured)."""


class KexecFailedError(ArmError):
    """The kernel refused the crash kernel (signature, lockdown, size, format …)."""


class KexecUnavailableError(ArmError):
    """Neither ``kexec_file_load`` nor ``/sbin/kexec`` can be used on this kernel."""


class BusyError(ArmError):
    """Another arm or disarm holds the lock, or the kernel's kexec mutex."""


@dataclass(frozen=True)
class LoadContext:
    """What the errno mapping needs: "nothing reserved" vs "too big", lockdown vs plain EPERM."""

    reserved_bytes: int | None
    image_bytes: int
    lockdown: str | None  # the active mode in /sys/kernel/security/lockdown, None when "none"
    euid: int


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def explain_load_errno(err: int, ctx: LoadContext) -> ArmError:
    """Turn the errno of a failed crash-kernel load into an actionable error."""
    if err == errno.EADDRNOTAVAIL:
        if not ctx.reserved_bytes:
            return NotReservedError(
                "no memory is reserved for the crash kernel: add crashkernel= to the kernel "
                "command line (kdumpd's grub snippet does) and reboot"
            )
        return KexecFailedError(
            f"the crash kernel and initrd ({_mib(ctx.image_bytes)}) do not fit in the "
            f"{_mib(ctx.reserved_bytes)} crashkernel reservation: raise crashkernel= or use a "
            "smaller initrd"
        )
    if err in (errno.EKEYREJECTED, errno.ENOKEY, errno.EBADMSG, errno.EKEYREVOKED):
        return KexecFailedError(
            f"the kernel rejected the crash kernel's signature ({errno.errorcode[err]}): with "
            "Secure Boot or IMA appraisal the crash kernel must be signed by a trusted key"
        )
    if err == errno.EPERM:
        if ctx.euid != 0:
            return KexecFailedError("permission denied: loading a crash kernel needs root")
        if ctx.lockdown:
            return KexecFailedError(
                f"the kernel is in lockdown ({ctx.lockdown}) and refused the crash kernel: "
                "only a signed kernel can be loaded"
            )
        return KexecFailedError(
            "permission denied by the kernel: loading a crash kernel needs CAP_SYS_BOOT "
            "(is kdumpd sandboxed without it?)"
        )
    if err == errno.EBUSY:
        return BusyError("the kernel is busy loading another kexec image: try again")
    if err == errno.ENOEXEC:
        return KexecFailedError("the crash kernel file is not a kernel image this kernel can load")
    if err == errno.ENOMEM:
        return KexecFailedError("the kernel ran out of memory while loading the crash kernel")
    if err == errno.EINVAL:
        return KexecFailedError(
            "the kernel rejected the load as invalid (command line too long, or an image it "
            "cannot use)"
        )
    if err == errno.ENOSYS:
        return KexecUnavailableError("this kernel was built without kexec support (CONFIG_KEXEC)")
    name = errno.errorcode.get(err, str(err))
    return KexecFailedError(f"loading the crash kernel failed: {os.strerror(err)} ({name})")


class KexecPort(Protocol):
    """The kernel side of arming. Implementations raise OSError carrying the kernel's errno."""

    def file_load(self, kernel: Path, initrd: Path | None, cmdline: str, flags: int) -> None: ...

    def file_unload(self) -> None: ...

    def run_kexec(self, argv: Sequence[str]) -> tuple[int, str]:
        """Run the kexec binary with an argument list; returns (exit status, stderr)."""
        ...


class LinuxKexec:
    """The real kernel: ``syscall(__NR_kexec_file_load, …)`` and ``/sbin/kexec``."""

    def __init__(self, machine: str | None = None) -> None:
        self._nr = SYSCALL_NUMBERS.get(machine or os.uname().machine)
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def file_load(self, kernel: Path, initrd: Path | None, cmdline: str, flags: int) -> None:
        # The kernel counts the terminating NUL in cmdline_len.
        raw = cmdline.encode() + b"\0"
        kernel_fd = os.open(kernel, os.O_RDONLY | os.O_CLOEXEC)
        initrd_fd = -1
        try:
            if initrd is not None:
                initrd_fd = os.open(initrd, os.O_RDONLY | os.O_CLOEXEC)
            self._syscall(kernel_fd, initrd_fd, raw, flags)
        finally:
            for fd in (kernel_fd, initrd_fd):
                if fd >= 0:
                    os.close(fd)

    def file_unload(self) -> None:
        self._syscall(-1, -1, b"", KEXEC_FILE_UNLOAD | KEXEC_FILE_ON_CRASH)

    def _syscall(self, kernel_fd: int, initrd_fd: int, cmdline: bytes, flags: int) -> None:
        if self._nr is None:
            raise OSError(errno.ENOSYS, "kexec_file_load: no syscall number for this machine")
        rc = self._libc.syscall(
            ctypes.c_long(self._nr),
            ctypes.c_int(kernel_fd),
            ctypes.c_int(initrd_fd),
            ctypes.c_ulong(len(cmdline)),
            ctypes.c_char_p(cmdline) if cmdline else None,
            ctypes.c_ulong(flags),
        )
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def run_kexec(self, argv: Sequence[str]) -> tuple[int, str]:
        # Imported here: only the legacy fallback runs a program, and every import is start-up
        # time of the boot-time `kdump-config load` (seconds under emulation).
        import subprocess

        try:
            proc = subprocess.run(
                list(argv), capture_output=True, text=True, timeout=120, check=False
            )
        except FileNotFoundError as exc:
            raise KexecUnavailableError(
                f"{argv[0]} is not installed and kexec_file_load is unavailable"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise KexecFailedError(f"{argv[0]} did not finish within 120 s") from exc
        return proc.returncode, proc.stderr.strip()


class SimulatedKexec:
    """The kernel of a fake machine laid out under ``--root``: a load flips its sysfs flag.

    Selected only by ``KDUMPD_KEXEC_SIMULATE=1`` together with a root other than ``/`` (see
    :func:`port_for`), so the daemon and CLI can be driven end to end on a test tree, where a real
    ``kexec_file_load`` would act on the host instead of the tree.
    """

    def __init__(self, root: SystemRoot) -> None:
        self._loaded = root.path("/sys/kernel/kexec_crash_loaded")

    def file_load(self, kernel: Path, initrd: Path | None, cmdline: str, flags: int) -> None:
        if not self._loaded.exists():
            raise OSError(errno.ENOSYS, "no kexec support on this machine")
        self._loaded.write_text("1\n")

    def file_unload(self) -> None:
        self._loaded.write_text("0\n")

    def run_kexec(self, argv: Sequence[str]) -> tuple[int, str]:
        return 1, "kexec: not available on a simulated machine"


SIMULATE_ENV = "KDUMPD_KEXEC_SIMULATE"


def port_for(root: SystemRoot) -> KexecPort:
    """The real kernel, or the simulation for a test tree when asked for explicitly."""
    if os.environ.get(SIMULATE_ENV) == "1" and root.base != Path("/"):
        return SimulatedKexec(root)
    return LinuxKexec()


def load_flags(initrd: Path | None) -> int:
    return KEXEC_FILE_ON_CRASH | (0 if initrd is not None else KEXEC_FILE_NO_INITRAMFS)


def kexec_argv(
    kernel: str, initrd: str | None, cmdline: str, extra: Sequence[str] = ()
) -> list[str]:
    """The ``kexec -p`` argument list equivalent to a load (also shown to users as the command)."""
    argv = [KEXEC_BINARY, "-p", *extra, f"--command-line={cmdline}"]
    if initrd is not None:
        argv.append(f"--initrd={initrd}")
    argv.append(kernel)
    return argv
