"""Will this machine save a crash dump? The state and, if not, every reason with the fix.

:func:`assess` turns a :class:`~kdumpd.config.Config` and a
:class:`~kdumpd.machine.SystemState` into a :class:`Report`. Each :class:`Problem` has a stable
``code`` (scripts and the D-Bus ``Problems`` property rely on it) and a message that says what
to do. Errors make the machine not ready; warnings are risks that do not stop a capture.

State: ``disabled`` when USE_KDUMP is not set (or 0); ``ready`` when the capture kernel is loaded
(fadump: registered) and no error remains; otherwise ``not-ready``.

Codes (e: error, w: warning): kdump-disabled e, config-missing w, kexec-unsupported e,
crashkernel-missing e, crashkernel-not-reserved e, crashkernel-too-small w, kernel-missing e,
initrd-missing e, kernel-not-relocatable e, kernel-unsigned e, kernel-link-stale w, not-loaded e,
fadump-unsupported e, fadump-not-registered e, coredir-not-writable e, coredir-low-space w,
sysrq-disabled w, sysrq-unavailable w.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from kdumpd.capture_kernel import (
    INITRD_LINK,
    KERNEL_LINK,
    CaptureImages,
    CaptureKernelError,
    capture_cmdline,
    locate_capture_kernel,
    release_of_image,
    resolve_link,
)
from kdumpd.config import Config, load_config
from kdumpd.crashkernel import GiB, MiB, Reservation, format_size, reservation
from kdumpd.machine import SystemState, read_system_state
from kdumpd.memory_estimate import Estimate, estimate_for_machine
from kdumpd.system import SystemRoot

GRUB_SNIPPET = "/etc/default/grub.d/kdump-tools.cfg"
DEFAULT_CRASHKERNEL = "512M-:192M"  # kdump-tools 1.10 (Debian 13) grub snippet
State = Literal["ready", "not-ready", "disabled"]


@dataclass(frozen=True)
class Problem:
    code: str
    message: str
    severity: Literal["error", "warning"] = "error"


@dataclass(frozen=True)
class Report:
    state: State
    problems: tuple[Problem, ...]
    dump_mode: Literal["kdump", "fadump"]
    armed: bool
    expected: Reservation  # what the command line asks for on this much RAM
    reserved: int  # bytes actually reserved
    reserved_start: int | None
    suggested: Estimate
    images: CaptureImages | None
    cmdline: str  # the capture kernel's command line
    config: Config
    system: SystemState

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")


def pe_signed(data: bytes) -> bool | None:
    """Whether a PE/EFI image has an Authenticode certificate table; None if not a PE image."""
    if len(data) < 0x40 or data[:2] != b"MZ":
        return None
    (pe,) = struct.unpack_from("<I", data, 0x3C)
    if data[pe : pe + 4] != b"PE\0\0" or len(data) < pe + 24 + 2:
        return None
    opt = pe + 24
    (magic,) = struct.unpack_from("<H", data, opt)
    dirs = opt + (112 if magic == 0x20B else 96)  # PE32+ or PE32 data directories
    if len(data) < dirs + 5 * 8:
        return None
    cert_size: int = struct.unpack_from("<II", data, dirs + 4 * 8)[1]
    return cert_size > 0


def _crashkernel_problems(
    config: Config, system: SystemState, expected: Reservation, suggested: Estimate
) -> list[Problem]:
    ram = format_size(-(-system.system_ram // MiB) * MiB)
    if not expected.param:
        size = DEFAULT_CRASHKERNEL
        if suggested.mib and suggested.mib > 192:
            size = f"512M-:{suggested.mib}M"
        return [
            Problem(
                "crashkernel-missing",
                "crashkernel= is not on the kernel command line: add crashkernel="
                f"{size} to GRUB_CMDLINE_LINUX_DEFAULT (kdumpd installs {GRUB_SNIPPET}),"
                " run update-grub and reboot",
            )
        ]
    if system.crash_reserved:
        if suggested.mib and system.crash_reserved < suggested.mib * MiB:
            return [
                Problem(
                    "crashkernel-too-small",
                    f"{format_size(system.crash_reserved)} reserved is less than the suggested"
                    f" {suggested}: the capture kernel may run out of memory; raise crashkernel="
                    f" in {GRUB_SNIPPET}, run update-grub and reboot",
                    "warning",
                )
            ]
        return []
    if expected.error:
        why = f"{expected.param} reserves nothing with {ram} of RAM, the kernel rejects it"
        why += f" ({expected.error})"
    elif expected.total == 0:
        why = f"{expected.param} reserves nothing with {ram} of RAM"
    else:
        why = (
            f"{expected.param} asks for {format_size(expected.total)} but the kernel could not"
            " reserve it at boot (see: dmesg | grep -i crashkernel)"
        )
    return [
        Problem(
            "crashkernel-not-reserved",
            f"Memory for crashkernel is not reserved: {why}; fix crashkernel= in {GRUB_SNIPPET},"
            " run update-grub and reboot",
        )
    ]


def _image_problems(root: SystemRoot, system: SystemState, images: CaptureImages) -> list[Problem]:
    if not system.kexec_file_required:
        return []
    why = "Secure Boot is on" if system.secure_boot else f"kernel lockdown is {system.lockdown}"
    if system.securelevel:
        why = "securelevel is 1"
    try:
        with root.path(resolve_link(root, images.kernel)).open("rb") as f:
            signed = pe_signed(f.read(4096))
    except OSError:
        signed = None  # unreadable here; the load itself will report it
    if signed is not False:
        return []
    return [
        Problem(
            "kernel-unsigned",
            f"{why}: only a signed kernel can be loaded (kexec_file_load), and {images.kernel}"
            " has no signature: use your distribution's signed kernel image",
        )
    ]


def _link_problems(root: SystemRoot, config: Config, system: SystemState) -> list[Problem]:
    """kdump-tools' ``check_symlink``: the /var/lib/kdump links in use follow the running kernel."""
    stale = []
    for link, used in ((KERNEL_LINK, config.kernel), (INITRD_LINK, config.initrd)):
        if used != link or not root.path(link).is_symlink():
            continue
        release = release_of_image(root, link)
        if release != system.kernel_release:
            stale.append(f"{link} is for {release or 'an unknown kernel'}")
    if not stale:
        return []
    return [
        Problem(
            "kernel-link-stale",
            f"{' and '.join(stale)}, not the running {system.kernel_release}: 'kdump-config load'"
            f" relinks them (or 'kdump-config symlinks {system.kernel_release}')",
            "warning",
        )
    ]


def _sysrq_problems(system: SystemState) -> list[Problem]:
    if system.sysrq is None:
        return [
            Problem(
                "sysrq-unavailable",
                "/proc/sys/kernel/sysrq is missing: this kernel has no Magic SysRq, so a test"
                " crash cannot be triggered with sysrq-trigger",
                "warning",
            )
        ]
    if system.sysrq != 0:
        return []
    return [
        Problem(
            "sysrq-disabled",
            "kernel.sysrq is 0: the SysRq keys are disabled, so Alt+SysRq+C cannot trigger a"
            " crash (echo c > /proc/sysrq-trigger as root still works); enable them with"
            " 'sysctl -w kernel.sysrq=1'",
            "warning",
        )
    ]


def _coredir_problems(config: Config, system: SystemState) -> list[Problem]:
    if config.target in ("ssh", "ftp"):
        return []  # the dump leaves the machine; the local directory does not matter
    where = f"KDUMP_COREDIR {config.coredir}"
    if not system.coredir_writable:
        return [Problem("coredir-not-writable", f"{where} is not writable: fix its permissions")]
    ram = system.meminfo.get("MemTotal", 0) * 1024
    if config.target == "local" and system.coredir_free < ram:
        return [
            Problem(
                "coredir-low-space",
                f"{where} has {system.coredir_free / GiB:.1f} GiB free, less than the"
                f" {ram / GiB:.1f} GiB of RAM: a large dump may not fit (it is then kept as"
                " dump-incomplete, with dmesg); free space or point KDUMP_COREDIR elsewhere",
                "warning",
            )
        ]
    return []


def assess(root: SystemRoot, config: Config, system: SystemState) -> Report:
    """The readiness report for a machine (files such as kernel images are read under root)."""
    problems: list[Problem] = []
    if not config.use_kdump:
        problems.append(
            Problem(
                "kdump-disabled",
                f"USE_KDUMP is not set to 1 in {config.path}: set USE_KDUMP=1 to enable kdump",
            )
        )
    if not root.exists(config.path):
        problems.append(
            Problem(
                "config-missing",
                f"{config.path} does not exist: every variable takes its default (kdump off);"
                " install kdumpd's package or create the file",
                "warning",
            )
        )
    fadump = system.fadump_enabled
    expected = reservation(system.cmdline_tokens, system.system_ram)
    images: CaptureImages | None = None
    image_problems: list[Problem] = []
    try:
        images = locate_capture_kernel(root, config, system.kernel_release)
        image_problems = _image_problems(root, system, images)
    except CaptureKernelError as exc:
        image_problems = [Problem(exc.code, str(exc))]
    suggested = estimate_for_machine(
        root,
        system.arch,
        system.cpus or 1,
        images.kernel if images else config.kernel,
        images.initrd if images else config.initrd,
    )
    if fadump:
        armed = bool(system.fadump_registered)
        if system.fadump_registered is None:
            problems.append(
                Problem(
                    "fadump-unsupported",
                    "fadump is enabled but /sys/kernel/fadump_registered is missing:"
                    ' pass "fadump=on" to the kernel',
                )
            )
        elif not armed:
            problems.append(
                Problem("fadump-not-registered", "fadump is not registered: run kdump-config load")
            )
    else:
        armed = bool(system.kexec_crash_loaded)
        if system.kexec_crash_loaded is None:
            problems.append(
                Problem(
                    "kexec-unsupported",
                    "this kernel has no kdump support (/sys/kernel/kexec_crash_loaded is missing):"
                    " boot a kernel built with CONFIG_KEXEC and CONFIG_CRASH_DUMP",
                )
            )
        problems += _crashkernel_problems(config, system, expected, suggested)
        problems += image_problems
        problems += _link_problems(root, config, system)
        if system.kexec_crash_loaded is False:
            problems.append(
                Problem(
                    "not-loaded",
                    "the capture kernel is not loaded: run 'kdump-config load'"
                    " (or systemctl restart kdump-tools) once the problems above are fixed",
                )
            )
    problems += _coredir_problems(config, system)
    problems += _sysrq_problems(system)

    if not config.use_kdump:
        state: State = "disabled"
    elif armed and not any(p.severity == "error" for p in problems):
        state = "ready"
    else:
        state = "not-ready"
    main = system.crash_main
    return Report(
        state=state,
        problems=tuple(problems),
        dump_mode="fadump" if fadump else "kdump",
        armed=armed,
        expected=expected,
        reserved=system.crash_reserved,
        reserved_start=main.start if main else None,
        suggested=suggested,
        images=images,
        cmdline=capture_cmdline(system.cmdline, config),
        config=config,
        system=system,
    )


def assess_machine(root: SystemRoot) -> Report:
    """Read the config and the machine under ``root`` and assess them."""
    config = load_config(root)
    return assess(root, config, read_system_state(root, config.coredir))
