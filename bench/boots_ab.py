"""Many later boots (and crashes) of kdumpd and kdump-tools, alternating: medians, not one run.

    peer=$(ls -dt /var/tmp/kdumpd-peer-bench-* | head -n 1)    # the newest kept peer run
    nice .venv/bin/python bench/boots_ab.py "$peer" --rounds 5
    nice .venv/bin/python bench/boots_ab.py "$peer" --rounds 3 --crash

Takes the guest disks that ``bench/fullsystem_peer.py --keep`` left (both products installed and
enabled, a crash already captured) and boots each of them again and again, alternating the
products and which one goes first in a round (ABBA…). Each boot is a new qemu, timed as the
peer bench times a later boot: qemu start → the console's `loaded kdump kernel`, with
`kdump-config show` then saying `ready to kdump`. With ``--crash`` each such boot then crashes
(sysrq-c) and goes through the peer bench's crash phase (capture, the capture kernel's reset,
the boot after it); then `systemctl poweroff`.

One boot per product per run cannot tell a product's seconds from the host's noise: in the
27 Nov 04:00 peer run the part of the boot before either product runs (qemu start → the
arming unit's start) took 21.5-31.0 s for kdump-tools' four boots and 23.9-33.9 s for
kdumpd's. Here each boot is split at the arming unit's start, so that part is shown apart, and
the medians of many alternating boots are compared. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.system import image  # noqa: E402 - the system test's harness
from tests.system.fullsystem import (  # noqa: E402
    CRASHKERNEL,
    FullSystemRun,
    KdumpdProduct,
    PhaseFailed,
)
from tests.system.peer_kdump_tools import KdumpToolsProduct  # noqa: E402
from tests.system.vm import GuestError  # noqa: E402

PRODUCTS = ("kdumpd", "kdump-tools")


@dataclass(frozen=True)
class Boot:
    product: str
    round: int
    kernel: float  # qemu start → the kernel's `Linux version` (host)
    arming_starts: float  # qemu start → `Starting … kdump-tools.service` (host)
    loaded: float  # qemu start → `loaded kdump kernel` (host)
    arming_unit: float  # kdump-tools.service inactive → active (guest clock)


# The crash phase's timed steps (FullSystemRun.crash()), in its report's names.
CRASH_STEPS = (
    "panic-to-capture-kernel",
    "capture-kernel-to-dump-service",
    "dump-service",
    "dump-service: dmesg",
    "dump-service: dump",
    "reboot-to-ready",
    "panic-to-next-kernel",
    "panic-to-ready",
)


def boot_once(run: FullSystemRun, name: str, rnd: int, crash: bool) -> Boot:
    loaded, _ = run.boot_to_ready()
    vm = run.vm
    _, kernel = vm.wait_console(r"Linux version \d", 10)
    _, arming = vm.wait_console(r"Starting .*kdump-tools\.servi", 10)
    unit = run.unit_start_seconds("kdump-tools.service")
    if crash:
        run.crash()
    run.vm.fire("systemctl poweroff")
    run.vm.wait_exit(timeout=300)
    return Boot(name, rnd, kernel.t - vm.started, arming.t - vm.started, loaded, unit)


def ratio_row(label: str, per_product: list[list[float]]) -> str:
    ours, theirs = (statistics.median(v) for v in per_product)
    n = min(len(v) for v in per_product)
    return f"| {label} | {n} | {ours:.1f} s | {theirs:.1f} s | {ours / theirs:.2f} |"


def summary(boots: list[Boot], runs: dict[str, FullSystemRun]) -> str:
    rows = [
        "| median | n | kdumpd | kdump-tools | ratio |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, key in (
        ("qemu start → loaded", "loaded"),
        ("qemu start → arming unit starts (no product code yet)", "arming_starts"),
        ("arming unit starts → loaded (host)", "arming_part"),
        ("kdump-tools.service start (guest clock)", "arming_unit"),
    ):
        values = [
            [
                b.loaded - b.arming_starts if key == "arming_part" else getattr(b, key)
                for b in boots
                if b.product == product
            ]
            for product in PRODUCTS
        ]
        if all(values):
            rows.append(ratio_row(label, values))
    for step in CRASH_STEPS:
        values = [
            [p.seconds for p in runs[product].report.phases if p.name == step and p.seconds]
            for product in PRODUCTS
        ]
        if all(values):
            rows.append(ratio_row(step, values))
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("peer_workdir", type=Path, help="a kept bench/fullsystem_peer.py workdir")
    parser.add_argument("--rounds", type=int, default=5, help="boots per product (default 5)")
    parser.add_argument("--crash", action="store_true", help="crash and capture at every boot")
    parser.add_argument("--crashkernel", default=CRASHKERNEL)
    parser.add_argument("--json", type=Path, help="also write every boot's times here")
    args = parser.parse_args()
    disks = {p: args.peer_workdir / p / "disk.qcow2" for p in PRODUCTS}
    missing = [str(d) for d in disks.values() if not d.exists()]
    if missing:
        print(f"boots_ab: no kept guest disk: {', '.join(missing)}", file=sys.stderr)
        return 2
    base = image.build_base_image()
    runs = {}
    for name in PRODUCTS:
        product = KdumpdProduct() if name == "kdumpd" else KdumpToolsProduct()
        workdir = args.peer_workdir / name / "boots"
        workdir.mkdir(exist_ok=True)
        run = FullSystemRun(workdir, lambda msg: None, product, (), args.crashkernel)
        run.base, run.disk = base, disks[name]
        runs[name] = run
    boots: list[Boot] = []
    code = 0
    try:
        for rnd in range(args.rounds):
            order = PRODUCTS[::-1] if rnd % 2 == 0 else PRODUCTS
            for name in order:
                boot = boot_once(runs[name], name, rnd, args.crash)
                boots.append(boot)
                load = Path("/proc/loadavg").read_text().split()[0]
                print(
                    f"round {rnd} {name}: kernel {boot.kernel:.1f} s, arming unit starts "
                    f"{boot.arming_starts:.1f} s, loaded {boot.loaded:.1f} s "
                    f"(unit {boot.arming_unit:.1f} s); host load {load}",
                    flush=True,
                )
    except (PhaseFailed, GuestError) as e:
        # What was measured so far is still printed below.
        print(f"boots_ab: stopped in round {rnd}, {name}: {e}", file=sys.stderr)
        code = 1
    finally:
        for run in runs.values():
            run.close()
    for name, run in runs.items():
        for failed in run.report.failures:
            print(f"{name} FAILED in {failed.name}: {failed.detail}")
    print(summary(boots, runs))
    if args.json:
        args.json.write_text(json.dumps([asdict(b) for b in boots], indent=1))
    return code


if __name__ == "__main__":
    start = time.monotonic()
    code = main()
    print(f"total: {time.monotonic() - start:.0f} s")
    sys.exit(code)
