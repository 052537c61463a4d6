"""Full-system proof: the .deb on Debian 12 under qemu; arm, crash, capture, find the dump.

Each phase is timed and recorded; the first phase that fails stops the run (the later ones
depend on it) and is reported with the evidence. Used by tests/system/test_full_system.py and by
``packaging/demo.sh`` (``python3 -m tests.system.fullsystem``), which prints the same table.

What differs between packages is a ``Product`` (how to get and install it, what its console says
while it saves the dump, what to check once it is ready again): ``KdumpdProduct`` here, Debian 12's
kdump-tools in ``peer_kdump_tools.py`` for ``bench/fullsystem_peer.py``, which runs the same
phases on both (``PEER_CYCLE``) and compares their times.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import image
from .vm import ConsoleLine, Guest, GuestError, extract_file

REPO = Path(__file__).resolve().parents[2]
BUS = ("org.kdumpd.Kdump1", "/org/kdumpd/Kdump1")
MANAGER = "org.kdumpd.Kdump1.Manager"
# kdump-tools' default since 1.10; KDUMPD_TEST_CRASHKERNEL tries another size (160M, 128M).
CRASHKERNEL = os.environ.get("KDUMPD_TEST_CRASHKERNEL", "192M")
APPEND = "root=/dev/vda ro console=ttyS0,115200 printk.time=1 crashkernel="

# kdump-tools 1.8.1 on the same kind of VM (issue #6), beside each of our phases.
PEER = {
    "install": "not timed (its capture initrd: built at first boot, 51-53 s)",
    "first boot after a chroot install: building the capture initrd": "51-53 s (mkinitramfs)",
    "first boot after a chroot install: qemu start → ready": "≈ 74-76 s (22.6 s + 51-53 s)",
    "panic-to-capture-kernel": "3.5 s",
    "capture-kernel-to-dump-service": "13.0 s",
    "dump-service": "0.2 s dmesg + 11.7 s dump",
    "panic-to-next-kernel": "35.3 s",
    "boot-to-ready, later boot": "22.6 s (qemu start → ready)",
    "reboot-to-ready": "20.0 s (55.3 s - 35.3 s: next kernel → ready; 22.6 s from qemu start)",
    "panic-to-ready": "55.3 s",
}


class PhaseFailed(AssertionError):
    """One phase's check failed: the message says what was expected and what the guest said."""


@dataclass
class Phase:
    name: str
    ok: bool
    seconds: float | None
    detail: str


@dataclass
class Report:
    phases: list[Phase] = field(default_factory=list)
    facts: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> Phase | None:
        return next((p for p in self.phases if not p.ok), None)

    @property
    def failures(self) -> list[Phase]:
        return [p for p in self.phases if not p.ok]

    def table(self) -> str:
        rows = ["| phase | result | kdumpd | kdump-tools |", "|---|---|---|---|"]
        for p in self.phases:
            took = f"{p.seconds:.1f} s" if p.seconds is not None else ""
            result = "ok" if p.ok else "FAILED"
            rows.append(f"| {p.name} | {result} | {took} | {PEER.get(p.name, '')} |")
        lines = ["\n".join(rows)]
        lines += [f"{k}: {v}" for k, v in self.facts.items()]
        for p in self.failures:
            lines.append(f"FAILED in phase {p.name}:\n{p.detail}")
        return "\n".join(lines)


def check(cond: bool, what: str, evidence: object) -> None:
    if not cond:
        raise PhaseFailed(f"{what}\n{evidence}")


def assert_passed(report: Report, last_phase: str) -> None:
    """A test's verdict on a run: print the table; every phase passed, through ``last_phase``."""
    print("\n" + report.table())
    names = ", ".join(p.name for p in report.failures)
    assert not report.failures, f"failed phases: {names}\n\n{report.table()}"
    assert [p.name for p in report.phases][-1] == last_phase, report.table()


@dataclass(frozen=True)
class SaveMarks:
    """Console lines of the dump service (regexes): dmesg saving starts, dump starts, dump saved."""

    dmesg: str
    dump: str
    saved: str


class Product(Protocol):
    """The package under test: what a run needs to know that differs between kdumpd and a peer."""

    name: str
    marks: SaveMarks

    def prepare(self, run: FullSystemRun) -> None:
        """Get the packages onto the host (run as a phase of its own)."""

    def install(self, run: FullSystemRun) -> None:
        """Install in the running guest as a user would, armed afterwards; record facts."""

    def ready_again(self, run: FullSystemRun, show: str) -> None:
        """Check `kdump-config show` (``show``) once it is ready after a reboot."""


class FullSystemRun:
    """One run: build inputs, boot, then the phases in order (see ``PHASES``)."""

    def __init__(
        self,
        workdir: Path,
        log: Callable[[str], None] = print,
        product: Product | None = None,
        phases: tuple[str, ...] | None = None,
        crashkernel: str = CRASHKERNEL,
    ) -> None:
        self.workdir = workdir
        self.log = log
        self.product: Product = product or KdumpdProduct()
        self.phases = phases or self.PHASES
        self.crashkernel = crashkernel
        self.report = Report()
        self.guest: Guest | None = None
        # The console logs of the qemus this run has already stopped (restart()).
        self.consoles: list[str] = []
        self.disk: Path | None = None
        self.dump: dict[str, Any] = {}
        self.dump_file = ""

    # --- bookkeeping --------------------------------------------------------------------------

    @contextmanager
    def phase(self, name: str, detail: str = "") -> Iterator[Phase]:
        """A checked phase timed by the host's wall clock around it, unless the body sets the
        yielded phase's ``seconds`` (a time taken from console events)."""
        self.log(f"[fullsystem] {name} ...")
        start = time.monotonic()
        phase = Phase(name, True, None, detail)
        try:
            yield phase
        except (PhaseFailed, GuestError, image.ImageError, subprocess.CalledProcessError) as e:
            self.report.phases.append(Phase(name, False, time.monotonic() - start, str(e)))
            raise
        if phase.seconds is None:
            phase.seconds = time.monotonic() - start
        self.report.phases.append(phase)

    def timed(self, name: str, seconds: float, detail: str = "") -> None:
        """A phase timed from console events rather than by the host's wall clock around it."""
        self.report.phases.append(Phase(name, True, seconds, detail))
        self.log(f"[fullsystem] {name}: {seconds:.1f} s")

    @property
    def vm(self) -> Guest:
        assert self.guest is not None
        return self.guest

    def sh(self, script: str, user: str | None = None, timeout: float = 120) -> str:
        result = self.vm.sh(script, user=user, timeout=timeout)
        check(result.rc == 0, f"`{script}` failed in the guest", result)
        return result.out

    def state(self) -> str:
        out = self.sh(f"busctl get-property {BUS[0]} {BUS[1]} {MANAGER} State")
        return out.strip()

    def bus_evidence(self, state: str) -> str:
        """What the daemon says about itself, for a failure message."""
        problems = self.vm.sh(f"busctl get-property {BUS[0]} {BUS[1]} {MANAGER} Problems Armed")
        journal = self.vm.sh("journalctl -b -u kdumpd -u kdump-tools --no-pager | tail -n 25")
        return f"State: {state}\nProblems, Armed: {problems.out}{problems.err}\n{journal.out}"

    def wait_ready(self, timeout: float) -> str:
        """Poll `kdump-config show` until it says ready; return its last output."""
        deadline = time.monotonic() + timeout
        result = None
        while time.monotonic() < deadline:
            result = self.vm.sh("kdump-config show", timeout=60)
            if "ready to kdump" in result.out and "Not ready" not in result.out:
                return result.out
            time.sleep(1)
        raise PhaseFailed(f"`kdump-config show` did not say `ready to kdump` in time\n{result}")

    # --- phases -------------------------------------------------------------------------------

    def unit_properties(self, unit: str, *names: str) -> dict[str, str]:
        """``systemctl show`` of the guest's ``unit``: the named properties (all non-empty)."""
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {name}" for name in names))
        return dict(line.split("=", 1) for line in out.split())

    def unit_start_seconds(self, unit: str, timeout: float = 300) -> float:
        """How long ``unit`` took from starting to active in its latest start (guest clock).
        Waits for it to become active: kexec may have loaded (`ready to kdump`) a moment before
        the unit's process ends."""
        deadline = time.monotonic() + timeout
        while True:
            stamps = self.unit_properties(
                unit, "InactiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic"
            )
            start = int(stamps["InactiveExitTimestampMonotonic"])
            active = int(stamps["ActiveEnterTimestampMonotonic"])
            if 0 < start <= active:
                return (active - start) / 1e6
            check(time.monotonic() < deadline, f"{unit} has not started and become active", stamps)
            time.sleep(1)

    # The image phase: the cached base image, the product installed later in the running guest.
    IMAGE_PHASE = "image"

    def make_image(self) -> image.BaseImage:
        return image.build_base_image()

    def build_inputs(self) -> None:
        self.product.prepare(self)
        with self.phase(self.IMAGE_PHASE):
            base = self.make_image()
            self.disk = image.make_overlay(base, self.workdir)
            self.base = base
            self.report.facts["guest kernel"] = f"{base.release}, crashkernel={self.crashkernel}"

    def start_guest(self) -> None:
        """Start qemu on the run's disk; the console of the qemu before it is kept for the log."""
        assert self.disk is not None
        self.close()
        self.guest = Guest(self.base, self.disk, self.workdir, APPEND + self.crashkernel)

    def boot(self) -> None:
        with self.phase("boot"):
            self.start_guest()
            self.vm.wait_hello(timeout=600)
            reserved = self.sh("cat /sys/kernel/kexec_crash_size").strip()
            check(int(reserved) > 0, "no crashkernel memory reserved", reserved)

    def install(self) -> None:
        with self.phase("install"):
            self.product.install(self)

    def boot_to_ready(self) -> tuple[float, str]:
        """Start qemu and wait for the product to arm: returns the seconds from qemu's start to
        the console's `loaded kdump kernel`, which both products print once kexec has returned,
        and `kdump-config show`, which must then say `ready to kdump`. Polling `show` alone
        would time readiness only to within one poll (about 2.5 s here).

        Every boot gets a new qemu (`-no-reboot` makes the guest's own reboot end qemu): under
        TCG, boots after in-process reboots of one guest grew slower with no product code
        involved (the initramfs unpacking took 5.7, 6.6, 20.4, then 45.8 s; bench/README.md),
        so what ran before the reboot would weigh on the boot being measured."""
        self.start_guest()
        self.vm.wait_hello(timeout=600)
        return self.wait_armed()

    def wait_armed(self) -> tuple[float, str]:
        """For the running qemu: seconds from its start to `loaded kdump kernel`, and `show`."""
        show = self.wait_ready(timeout=900)
        _, loaded = self.vm.wait_console(r"loaded kdump kernel", 60)
        return loaded.t - self.vm.started, show

    def restart(self, name: str) -> None:
        """Power the armed guest off and boot it again: qemu start → ready (issue #6's definition
        for later boots), and the arming unit's start (guest clock: the capture initrd too if it
        is built at boot)."""
        self.vm.fire("systemctl poweroff")
        self.vm.wait_exit(timeout=300)
        with self.phase(name, "qemu start → console `loaded kdump kernel`") as phase:
            phase.seconds, show = self.boot_to_ready()
            self.product.ready_again(self, show)
            armed = self.unit_start_seconds("kdump-tools.service")
        self.timed(f"{name}: kdump-tools.service start", armed, "guest clock")

    def first_boot(self) -> None:
        self.restart("boot-to-ready, first boot after install")

    def later_boot(self) -> None:
        self.restart("boot-to-ready, later boot")

    def ready(self) -> None:
        with self.phase("ready"):
            show = self.wait_ready(timeout=300)
            self.report.facts["kdump-config show"] = "\n" + show.rstrip()
            # The agent starts early: let the boot finish before asking about units.
            self.vm.sh("systemctl is-system-running --wait", timeout=300)
            active = self.vm.sh("systemctl is-active kdump-tools.service")
            check(active.out.strip() == "active", "kdump-tools.service is not active", active)
            before = self.vm.sh("systemctl is-active kdumpd.service").out.strip()
            check(before != "active", "kdumpd.service runs before any bus call", before)
            state = self.state()
            check(state == 's "ready"', "the bus State is not ready", self.bus_evidence(state))
            after = self.sh("systemctl is-active kdumpd.service").strip()
            check(after == "active", "kdumpd.service was not bus-activated", after)

    def polkit(self) -> None:
        with self.phase("polkit"):
            # Arm and Disarm answer once systemd has run kdump-tools.service. Under emulation on
            # a busy host the kexec_file_load alone can outlast busctl's default 25 s timeout
            # (on hardware it takes well under a second).
            call = f"busctl --timeout=600 call {BUS[0]} {BUS[1]} {MANAGER}"
            denied = self.vm.sh(f"{call} Disarm 'a{{sv}}' 0", user=image.GUEST_USER)
            check(denied.rc != 0, "an unprivileged Disarm was not refused", denied)
            check(
                re.search(
                    r"NotAuthorized|not authorized|authentication is required", denied.err, re.I
                )
                is not None,
                "the unprivileged Disarm failed, but not with an authorization error",
                denied,
            )
            check(self.state() == 's "ready"', "a refused Disarm changed State", self.state())
            self.sh(f"{call} Disarm 'a{{sv}}' 0", timeout=600)
            disarmed = self.state()
            check(disarmed != 's "ready"', "State still ready after root's Disarm", disarmed)
            loaded = self.sh("cat /sys/kernel/kexec_crash_loaded").strip()
            check(loaded == "0", "the capture kernel is still loaded after Disarm", loaded)
            self.sh(f"{call} Arm 'a{{sv}}' 0", timeout=600)
            armed = self.state()
            check(armed == 's "ready"', "State not ready again after Arm", armed)
            loaded = self.sh("cat /sys/kernel/kexec_crash_loaded").strip()
            check(loaded == "1", "the capture kernel is not loaded after Arm", loaded)

    def crash(self) -> None:
        vm = self.vm
        with self.phase("crash-and-capture"):
            loaded = self.sh("cat /sys/kernel/kexec_crash_loaded").strip()
            check(loaded == "1", "no capture kernel loaded: a crash would not be captured", loaded)
            mark = vm.mark()
            vm.fire("sync; echo c > /proc/sysrq-trigger")
            i, panic = vm.wait_console(r"Kernel panic - not syncing", 120, mark)
            i, capture = vm.wait_console(r"Linux version \d", 300, i + 1)
            first_capture_line = i
            i, service = vm.wait_console(r"Start(ing|ed) .*kdump-tools-dump", 600, i + 1)
            first_service_line = i
            # The capture kernel's reboot ends this qemu (-no-reboot), as a power cycle would.
            vm.wait_exit(timeout=1200)
            assert vm.exited is not None
            reset = vm.exited
            saving = vm.lines[first_service_line:]
            capture_boot = vm.console_text(first_capture_line)
            capture_log = vm.console_text(mark, timed=True)
            (self.workdir / "capture-console.log").write_text(capture_log)
        self.timed("panic-to-capture-kernel", capture.t - panic.t)
        self.timed("capture-kernel-to-dump-service", service.t - capture.t)
        self.timed("dump-service", reset - service.t, "dump service start → reset (qemu exits)")
        self._save_stages(saving)
        self._capture_memory(capture_boot)
        with self.phase("reboot-to-ready", "qemu start → console `loaded kdump kernel`") as phase:
            phase.seconds, show = self.boot_to_ready()
            _, kernel = self.vm.wait_console(r"Linux version \d", 60)
            self.product.ready_again(self, show)
        # The crash's own time, then the new qemu's: the gap between them is the harness's.
        crashed = reset - panic.t
        self.timed(
            "panic-to-next-kernel",
            crashed + kernel.t - self.vm.started,
            "panic → reset, then qemu start → kernel start",
        )
        self.timed(
            "panic-to-ready", crashed + phase.seconds, "panic → reset, then qemu start → ready"
        )

    def _save_stages(self, lines: list[ConsoleLine]) -> None:
        """dmesg and dump saving, from the product's own console lines (host times)."""
        marks = self.product.marks
        found: dict[str, float] = {}
        for line in lines:
            for key, pattern in (
                ("dmesg", marks.dmesg),
                ("dump", marks.dump),
                ("saved", marks.saved),
            ):
                if key not in found and re.search(pattern, line.text):
                    found[key] = line.t
        if len(found) < 3:
            self.report.facts["dump service stages"] = f"not all found on the console: {found}"
            return
        self.timed("dump-service: dmesg", found["dump"] - found["dmesg"])
        self.timed("dump-service: dump", found["saved"] - found["dump"])

    def _capture_memory(self, log: str) -> None:
        avail = [int(a) for a in re.findall(r"KDUMPD-TEST-MEM avail_kb=(\d+)", log)]
        service = [int(c) for c in re.findall(r"KDUMPD-TEST-MEM .*service_bytes=(\d+)", log)]
        total = re.findall(r"Memory: (\d+)K/(\d+)K available", log)
        if len(total) >= 1:
            self.report.facts["capture kernel memory"] = (
                f"{int(total[-1][0]) // 1024} MiB available at boot"
            )
        if avail:
            self.report.facts["capture boot MemAvailable"] = f"lowest {min(avail) // 1024} MiB"
        if service:
            self.report.facts["dump service memory"] = f"peak {max(service) / 2**20:.1f} MiB"
        anon = [int(a) for a in re.findall(r"KDUMPD-TEST-MEM .* anon=(\d+)", log)]
        if anon:
            self.report.facts["dump service anonymous memory"] = f"peak {max(anon) / 2**20:.1f} MiB"
        # Major faults are page-ins from disk: in a capture kernel without swap, code pages
        # evicted and read again, the sign that the reservation is too small to run in.
        faults = [int(m) for m in re.findall(r"KDUMPD-TEST-MEM .*majfault=(\d+)", log)]
        if faults:
            self.report.facts["capture boot major faults"] = (
                f"{faults[-1] - faults[0]} while watched ({faults[-1]} since boot)"
            )

    def dump_listed(self) -> None:
        with self.phase("dump-listed"):
            out = self.sh(
                "busctl --json=short call org.kdumpd.Kdump1 /org/kdumpd/Kdump1 "
                "org.freedesktop.DBus.ObjectManager GetManagedObjects"
            )
            objects = json.loads(out)["data"][0]
            dumps = {
                path: {k: v["data"] for k, v in ifaces["org.kdumpd.Kdump1.Dump"].items()}
                for path, ifaces in objects.items()
                if "org.kdumpd.Kdump1.Dump" in ifaces
            }
            check(len(dumps) == 1, "the daemon does not list exactly one dump", out)
            self.dump = next(iter(dumps.values()))
            check(self.dump.get("Status") == "complete", "the dump is not complete", self.dump)
            panic = self.dump.get("PanicMessage", "")
            check("sysrq triggered crash" in panic, "no panic message on the dump", self.dump)
            self.report.facts["dump"] = (
                f"{self.dump.get('Path')} ({self.dump.get('Size', 0) / 2**20:.1f} MiB, "
                f"{self.dump.get('Format')}), panic: {panic.strip()}"
            )
            path = str(self.dump.get("Path"))
            # Path names the dump directory or the dump file in it.
            directory = path if self.vm.sh(f"test -d {path}").rc == 0 else str(Path(path).parent)
            listing = self.sh(f"ls -ln {directory}")
            names = re.findall(r"\s(dump\.\d+\S*)$", listing, re.M)
            check(len(names) == 1, "no single dump.<stamp> file in the dump directory", listing)
            self.dump_file = f"{directory}/{names[0]}"
            self.report.facts["dump directory"] = "\n" + listing.rstrip()
            # What the capture recorded about itself: stage durations and its peak memory.
            meta = json.loads(self.sh(f"cat {directory}/metadata.json"))
            durations = meta.get("durations", {})
            self.report.facts["capture stages"] = ", ".join(
                f"{k} {v:.1f} s" for k, v in durations.items() if isinstance(v, int | float)
            )
            if meta.get("peak_rss_bytes"):
                self.report.facts["capture peak RSS"] = f"{meta['peak_rss_bytes'] / 2**20:.1f} MiB"

    def dump_saved(self) -> None:
        """The dump as a user finds it: /var/crash/<stamp>/dump.<stamp> beside dmesg.<stamp>."""
        with self.phase("dump-saved"):
            listing = self.sh("ls -ln /var/crash/*/")
            dumps = re.findall(
                r"^\S+\s+\d+\s+\d+\s+\d+\s+(\d+)\s.*\s(dump\.\d+\S*)$", listing, re.M
            )
            check(len(dumps) == 1, "not exactly one dump.<stamp> under /var/crash", listing)
            check("dmesg." in listing, "no dmesg.<stamp> beside the dump", listing)
            size, name = dumps[0]
            path = self.sh(f"ls -d /var/crash/*/{name}").strip()
            magic = self.sh(f"head -c 12 {path} | tr -c '[:print:]' .").strip()
            self.dump_file = path
            self.report.facts["dump size"] = (
                f"{int(size) / 2**20:.1f} MiB ({path}, starts {magic!r})"
            )
            self.report.facts["dump directory"] = "\n" + listing.rstrip()

    def purge(self) -> None:
        with self.phase("purge"):
            out = self.vm.sh(
                "DEBIAN_FRONTEND=noninteractive apt-get purge -y kdumpd 2>&1", timeout=300
            )
            check(out.rc == 0, "apt-get purge kdumpd failed", out)
            left = self.vm.sh(
                "ls -d /var/lib/kdump /etc/default/kdump-tools /etc/default/grub.d/kdump-tools.cfg "
                "/etc/kernel/postinst.d/kdump-tools /lib/systemd/system/kdump-tools.service "
                "/usr/sbin/kdump-config 2>/dev/null; debconf-show kdumpd 2>/dev/null"
            )
            check(left.out.strip() == "", "purge left files or debconf answers behind", left)
            loaded = self.sh("cat /sys/kernel/kexec_crash_loaded").strip()
            check(loaded == "0", "the capture kernel is still loaded after purge", loaded)

    def drgn(self) -> None:
        with self.phase("drgn"):
            vm = self.vm
            vm.fire("systemctl poweroff")
            vm.wait_exit(timeout=180)
            assert self.disk is not None
            local = self.workdir / "dump"
            extract_file(self.disk, self.dump_file, local, self.workdir)
            argv = [sys.executable, str(Path(__file__).with_name("drgn_check.py")), str(local)]
            # The kernel's debug vmlinux, when the capture tests have fetched it for this very
            # kernel release: then drgn also walks the crashed stack and the printk buffer.
            vmlinux = image.CACHE.parent / f"dbg/usr/lib/debug/boot/vmlinux-{self.base.release}"
            if vmlinux.exists():
                argv.append(str(vmlinux))
            else:
                self.report.facts["drgn debug info"] = f"none ({vmlinux} missing): kallsyms only"
            out = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                check=False,
            )
            check(out.returncode == 0, "drgn could not read the dump", out.stdout + out.stderr)
            self.report.facts["drgn"] = out.stdout.strip()
            check(
                f"release {self.base.release}" in out.stdout,
                "drgn read a different kernel release from the dump",
                out.stdout,
            )

    # ready, polkit, dump_listed and purge are kdumpd's own (its bus API and its package).
    PHASES: tuple[str, ...] = (
        "boot",
        "install",
        "ready",
        "polkit",
        "crash",
        "dump_listed",
        "purge",
        "drgn",
    )
    # A failure here leaves the guest usable for the phases after it (the run goes on, the
    # failure is still reported); any other failure ends the run.
    NON_BLOCKING = frozenset({"polkit", "purge"})

    def run(self) -> Report:
        self.report.facts["host load at start"] = Path("/proc/loadavg").read_text().strip()
        try:
            self.build_inputs()
            for name in self.phases:
                try:
                    getattr(self, name)()
                except (PhaseFailed, GuestError):
                    if name not in self.NON_BLOCKING:
                        raise
        except (PhaseFailed, GuestError, image.ImageError, subprocess.CalledProcessError):
            pass
        finally:
            self.report.facts["host load at end"] = Path("/proc/loadavg").read_text().strip()
            self.close()
        return self.report

    def close(self) -> None:
        """Stop the guest, if any, and write console.log.txt: one section per qemu started,
        each one's times counted from its own start."""
        if self.guest is not None:
            self.consoles.append(self.guest.console_text(timed=True))
            self.guest.close()
            self.guest = None
        if self.consoles:
            (self.workdir / "console.log.txt").write_text("\n".join(self.consoles))


class KdumpdProduct:
    """The freshly built kdumpd .deb (or ``KDUMPD_DEB``), installed with apt."""

    name = "kdumpd"
    marks = SaveMarks(
        dmesg=r"kdumpd-capture: saving to ",
        dump=r"kdumpd-capture: saved dmesg",
        saved=r"kdumpd-capture: saved the dump",
    )

    def __init__(self) -> None:
        self.deb: Path | None = None

    def prepare(self, run: FullSystemRun) -> None:
        with run.phase("build-deb"):
            prebuilt = os.environ.get("KDUMPD_DEB")
            # KDUMPD_DEB: a package built elsewhere (a CI artefact, a downloaded .deb).
            self.deb = Path(prebuilt) if prebuilt else self._build_deb(run.workdir / "deb")
            run.report.facts[".deb"] = f"{self.deb.name}, {self.deb.stat().st_size} bytes"

    @staticmethod
    def _build_deb(out_dir: Path) -> Path:
        out = subprocess.run(
            ["bash", str(REPO / "packaging/build-deb.sh"), str(out_dir)],
            capture_output=True,
            text=True,
            check=False,
        )
        check(out.returncode == 0, "packaging/build-deb.sh failed", out.stderr[-3000:])
        return Path(out.stdout.strip().splitlines()[-1])

    def install(self, run: FullSystemRun) -> None:
        assert self.deb is not None
        run.vm.put("/root/kdumpd.deb", self.deb.read_bytes())
        # The user's answer to "Should kdump be enabled by default?": yes. (The
        # default-enable check says no on a 2 CPU / 2 GB VM, as Ubuntu's does.)
        run.sh("echo 'kdumpd kdumpd/use_kdump boolean true' | debconf-set-selections")
        out = run.vm.sh(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "
            "/root/kdumpd.deb 2>&1",
            timeout=1200,
        )
        check(out.rc == 0, "apt-get install ./kdumpd.deb failed", out)
        initrds = run.sh("ls -l /var/lib/kdump/")
        check("initrd.img-" in initrds, "no capture initrd built at install", initrds)
        built = re.search(r"kdumpd: built .*", out.out)
        run.report.facts["capture initrd"] = built.group(0) if built else "?"
        armed = run.unit_start_seconds("kdump-tools.service")
        run.report.facts["kdump-tools.service start at install"] = f"{armed:.1f} s"

    def ready_again(self, run: FullSystemRun, show: str) -> None:
        # Right after install it legitimately says Unknown; after a reboot the early-boot
        # meminfo snapshot (units/kdumpd-meminfo.service) gives a number.
        size = re.search(r"^crashkernel suggested size: (\d+)M", show, re.M)
        check(size is not None, "`kdump-config show` has no suggested size after a reboot", show)
        assert size is not None
        run.report.facts["crashkernel suggested size"] = f"{size.group(1)}M"


# The phases the bench runs on every product: the same install → reboots → crash → dump cycle.
PEER_CYCLE = ("boot", "install", "first_boot", "later_boot", "crash", "dump_saved")


def main(run_type: type[FullSystemRun] = FullSystemRun) -> int:
    keep = "--keep" in sys.argv
    workdir = Path(tempfile.mkdtemp(prefix="kdumpd-fullsystem-"))
    start = time.monotonic()
    report = run_type(workdir).run()
    print(report.table())
    print(f"total: {time.monotonic() - start:.0f} s; console log: {workdir}/console.log.txt")
    if not keep and report.failed is None:
        shutil.rmtree(workdir)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
