"""What the capture kernel boots: its command line, and which kernel and initrd.

:func:`capture_cmdline` is pure. It follows kdump-tools' ``kdump_load``: KDUMP_CMDLINE if set,
else the running kernel's command line minus ``crashkernel=``, ``hugepages=``, ``hugepagesz=``
and ``abm=``; then KDUMP_CMDLINE_APPEND. Two additions make the capture boot safe whatever the
config says: it always boots ``systemd.unit=kdump-tools-dump.service`` (the capture unit), and
a capture kernel that itself panics reboots after :data:`PANIC_TIMEOUT` seconds instead of
hanging (``panic=`` is added when absent or 0). Parameters after ``--`` belong to init; ours go
before it (kdump-tools appends after it, where the kernel never sees them).

:func:`locate_capture_kernel` follows kdump-tools' ``locate_kdump_kernel``: KDUMP_KERNEL and
KDUMP_INITRD when set (they must exist), else the running kernel from ``/boot`` if its config
says ``CONFIG_RELOCATABLE=y``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from kdumpd.config import Config
from kdumpd.errors import KdumpdError
from kdumpd.system import SystemRoot

STRIPPED_PARAMS = ("crashkernel", "hugepages", "hugepagesz", "abm")
CAPTURE_UNIT = "kdump-tools-dump.service"
PANIC_TIMEOUT = 10
KDUMP_DIR = "/var/lib/kdump"
KERNEL_LINK = f"{KDUMP_DIR}/vmlinuz"
INITRD_LINK = f"{KDUMP_DIR}/initrd.img"

_TOKEN = re.compile(r'(?:[^\s"]+|"[^"]*"?)+')


def split_cmdline(cmdline: str) -> list[str]:
    """Kernel-style split: blanks separate parameters, double quotes group (and are kept)."""
    return _TOKEN.findall(cmdline)


def param_name(token: str) -> str:
    """``foo.bar=1`` -> ``foo.bar``; the kernel treats ``-`` and ``_`` in names alike."""
    return token.split("=", 1)[0].replace("-", "_")


def param_value(tokens: list[str], name: str) -> str | None:
    """The value of the last ``name=`` parameter (the one the kernel uses), or None."""
    found = None
    for t in tokens:
        if param_name(t) == name.replace("-", "_") and "=" in t:
            found = t.split("=", 1)[1].strip('"')
    return found


def strip_params(tokens: list[str], names: tuple[str, ...] = STRIPPED_PARAMS) -> list[str]:
    """``tokens`` without any ``name=value`` for the given names."""
    drop = {n.replace("-", "_") for n in names}
    return [t for t in tokens if not ("=" in t and param_name(t) in drop)]


def capture_cmdline(current_cmdline: str, config: Config) -> str:
    """The command line for the capture kernel, given the running kernel's ``/proc/cmdline``."""
    base = split_cmdline(config.cmdline if config.cmdline is not None else current_cmdline)
    if config.cmdline is None:
        base = strip_params(base)
    kernel, init = _split_init_args(base)
    appended = split_cmdline(config.cmdline_append)
    tokens = kernel + appended
    if not any(param_name(t) == "systemd.unit" for t in appended):
        tokens.append(f"systemd.unit={CAPTURE_UNIT}")
    if param_value(tokens, "panic") in (None, "0", ""):
        tokens.append(f"panic={PANIC_TIMEOUT}")
    return " ".join(tokens + (["--", *init] if init else []))


def _split_init_args(tokens: list[str]) -> tuple[list[str], list[str]]:
    if "--" in tokens:
        i = tokens.index("--")
        return tokens[:i], tokens[i + 1 :]
    return tokens, []


class CaptureKernelError(KdumpdError):
    """No usable capture kernel or initrd; ``code`` is the readiness problem code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class CaptureImages:
    """The kernel and initrd to load into the crash region (system paths)."""

    kernel: str
    initrd: str | None
    origin: Literal["config", "running-kernel"]


def kernel_is_relocatable(root: SystemRoot, release: str) -> bool | None:
    """``CONFIG_RELOCATABLE=y`` in ``/boot/config-<release>``; None when that file is absent."""
    text = root.read_text(f"/boot/config-{release}")
    if text is None:
        return None
    return re.search(r"^CONFIG_RELOCATABLE=y$", text, re.MULTILINE) is not None


def release_of_image(root: SystemRoot, system_path: str) -> str | None:
    """``6.1.0-56-amd64`` for a path that is (or links to) ``/boot/vmlinuz-6.1.0-56-amd64``."""
    target = resolve_link(root, system_path)
    m = re.fullmatch(r"(?:vmlinu[xz]|initrd\.img)-(.+)", target.rsplit("/", 1)[-1])
    return m.group(1) if m else None


def resolve_link(root: SystemRoot, system_path: str) -> str:
    """Follow symbolic links inside ``root`` (absolute targets stay inside it); a system path."""
    path = system_path
    for _ in range(40):
        p = root.path(path)
        if not p.is_symlink():
            return path
        target = str(p.readlink())
        path = target if target.startswith("/") else f"{path.rsplit('/', 1)[0]}/{target}"
    raise CaptureKernelError("kernel-missing", f"{system_path}: too many levels of symbolic links")


def image_exists(root: SystemRoot, system_path: str) -> bool:
    """Whether the path exists once its links are followed inside ``root``."""
    return root.path(resolve_link(root, system_path)).exists()


def locate_capture_kernel(root: SystemRoot, config: Config, release: str) -> CaptureImages:
    """The capture kernel and initrd for a machine running ``release``, or CaptureKernelError."""
    if config.kernel:
        if not image_exists(root, config.kernel):
            raise CaptureKernelError(
                "kernel-missing",
                f"KDUMP_KERNEL {config.kernel} does not exist: run 'kdump-config load' to link it"
                f" to /boot/vmlinuz-{release}, or unset KDUMP_KERNEL in {config.path}",
            )
        if config.initrd and not image_exists(root, config.initrd):
            raise CaptureKernelError(
                "initrd-missing",
                f"KDUMP_INITRD {config.initrd} does not exist: run 'kdump-config load' to build"
                f" it, or unset KDUMP_INITRD in {config.path}",
            )
        kernel_release = release_of_image(root, config.kernel)
        if kernel_release and kernel_is_relocatable(root, kernel_release) is False:
            raise CaptureKernelError(
                "kernel-not-relocatable",
                f"{config.kernel} ({kernel_release}) is not relocatable"
                f" (no CONFIG_RELOCATABLE=y in /boot/config-{kernel_release}):"
                " set KDUMP_KERNEL to a relocatable kernel",
            )
        return CaptureImages(config.kernel, config.initrd, "config")

    relocatable = kernel_is_relocatable(root, release)
    if not relocatable:
        why = "no /boot/config-" + release if relocatable is None else "not relocatable"
        raise CaptureKernelError(
            "kernel-not-relocatable",
            f"KDUMP_KERNEL is unset and the running kernel {release} cannot be used ({why}):"
            f" set KDUMP_KERNEL in {config.path}",
        )
    for name in ("vmlinuz", "vmlinux"):
        kernel = f"/boot/{name}-{release}"
        if root.path(kernel).is_file():
            initrd = f"/boot/initrd.img-{release}"
            return CaptureImages(
                kernel, initrd if root.path(initrd).is_file() else None, "running-kernel"
            )
    raise CaptureKernelError(
        "kernel-missing",
        f"KDUMP_KERNEL is unset and /boot/vmlinuz-{release} does not exist:"
        f" install the kernel image or set KDUMP_KERNEL in {config.path}",
    )


def wanted_links(root: SystemRoot, release: str) -> dict[str, str]:
    """The ``/var/lib/kdump`` links kdump-tools keeps for ``release`` (link -> target)."""
    kernel = f"/boot/vmlinuz-{release}"
    if not root.exists(kernel) and root.exists(f"/boot/vmlinux-{release}"):
        kernel = f"/boot/vmlinux-{release}"
    return {KERNEL_LINK: kernel, INITRD_LINK: f"{KDUMP_DIR}/initrd.img-{release}"}
