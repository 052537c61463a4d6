"""kdumpd against Debian 12's kdump-tools 1.8.1 + makedumpfile: the whole crash-capture cycle.

    nice .venv/bin/python bench/fullsystem_peer.py                      # both, crashkernel=192M
    nice .venv/bin/python bench/fullsystem_peer.py --crashkernel 160M
    nice .venv/bin/python bench/fullsystem_peer.py --only kdump-tools --keep
    nice .venv/bin/python bench/fullsystem_peer.py --kdumpd-first       # the other order

One run boots the same cached Debian 12 base image under qemu (TCG, 2 GiB, 2 CPUs) twice, once
per product, and runs the same phases on each (``PEER_CYCLE`` in tests/system/fullsystem.py):
install with apt as a user would, power off and start qemu again twice (the first boot after
install, then a later boot), crash with sysrq-c, let the capture kernel save the dump and
reboot, then find /var/crash/<stamp>/dump.<stamp>. Times come from the host: console lines
stamped when they arrive, the agent's answers; the arming unit's start is read from systemd
in the guest. Timings on a shared TCG host vary run to run, so only the ratio kdumpd /
kdump-tools of one run means something: the table gives both and their ratio, and the host's
load during each run. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.system.fullsystem import (  # noqa: E402 - the system test's harness
    CRASHKERNEL,
    PEER_CYCLE,
    FullSystemRun,
    KdumpdProduct,
    Product,
    Report,
)
from tests.system.peer_kdump_tools import KdumpToolsProduct  # noqa: E402

# Phases that prepare the host side (package build or download, image): not part of the cycle.
HOST_ONLY = frozenset({"build-deb", "download-debs", "image"})
PRODUCTS = ("kdumpd", "kdump-tools")


class LoadSampler:
    """The host's 1-minute load average every few seconds while a run goes on."""

    def __init__(self, every: float = 10.0) -> None:
        self.samples: list[float] = []
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while True:
            self.samples.append(float(Path("/proc/loadavg").read_text().split()[0]))
            if self._stop.wait(self._every):
                return

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> str:
        s = self.samples
        return f"1-min load min {min(s):.2f} / mean {sum(s) / len(s):.2f} / max {max(s):.2f}"


def run_product(name: str, workdir: Path, crashkernel: str) -> tuple[Report, str]:
    """One full cycle; returns its report and the host load seen meanwhile."""
    product: Product = KdumpdProduct() if name == "kdumpd" else KdumpToolsProduct()
    workdir.mkdir(parents=True)

    def log(msg: str) -> None:
        print(f"[{name}] {msg}", flush=True)

    with LoadSampler() as load:
        report = FullSystemRun(workdir, log, product, PEER_CYCLE, crashkernel).run()
    return report, load.summary()


def phase_seconds(report: Report | None, name: str) -> float | str:
    """A phase's seconds, "FAILED", or "" when the run did not get there."""
    found = [p for p in report.phases if p.name == name] if report else []
    if not found:
        return ""
    if not found[0].ok or found[0].seconds is None:
        return "FAILED"
    return found[0].seconds


def table(typed: dict[str, Report]) -> str:
    names: list[str] = []
    for report in typed.values():
        names += [p.name for p in report.phases if p.name not in HOST_ONLY and p.name not in names]
    rows = ["| phase | kdumpd | kdump-tools | ratio |", "|---|---:|---:|---:|"]
    for phase in names:
        seconds = [phase_seconds(typed.get(product), phase) for product in PRODUCTS]
        cells = [f"{s:.1f} s" if isinstance(s, float) else s for s in seconds]
        ours, theirs = seconds
        ratio = (
            f"{ours / theirs:.2f}" if isinstance(ours, float) and isinstance(theirs, float) else ""
        )
        rows.append(f"| {phase} | {cells[0]} | {cells[1]} | {ratio} |")
    facts: list[str] = []
    for report in typed.values():
        facts += [k for k, v in report.facts.items() if "\n" not in v and k not in facts]
    rows += ["", "| fact | kdumpd | kdump-tools |", "|---|---|---|"]
    for key in facts:
        cells = [typed[p].facts.get(key, "") if p in typed else "" for p in PRODUCTS]
        rows.append(f"| {key} | {cells[0]} | {cells[1]} |")
    for product, report in typed.items():
        for failed in report.failures:
            rows.append(f"\n{product} FAILED in phase {failed.name}:\n{failed.detail}")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--crashkernel",
        default=CRASHKERNEL,
        help="crashkernel= of the guest, the same for both (default 192M, or "
        "KDUMPD_TEST_CRASHKERNEL)",
    )
    parser.add_argument("--only", choices=PRODUCTS, help="run one product only")
    parser.add_argument(
        "--kdumpd-first",
        action="store_true",
        help="run kdumpd before kdump-tools (default: kdump-tools first); a second run in the "
        "other order shows what the order alone does to the ratios",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the guest disks (default: logs only)"
    )
    parser.add_argument("--json", type=Path, help="also write the reports as JSON here")
    args = parser.parse_args()
    top = Path(tempfile.mkdtemp(prefix="kdumpd-peer-bench-", dir="/var/tmp"))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads: dict[str, str] = {}
    reports: dict[str, Report] = {}
    # kdump-tools first by default: both runs then see the same cached image and a warm page
    # cache of it. The second half of a run may meet a busier host, so swap to check.
    order = ["kdumpd", "kdump-tools"] if args.kdumpd_first else ["kdump-tools", "kdumpd"]
    if args.only:
        order = [args.only]
    for name in order:
        reports[name], loads[name] = run_product(name, top / name, args.crashkernel)
    cpus = os.cpu_count()
    print(
        f"\n{started}: host {cpus} CPUs; guests qemu TCG, 2 GiB, 2 CPUs, "
        f"crashkernel={args.crashkernel}; ran {' then '.join(order)}; "
        "ratio = kdumpd / kdump-tools"
    )
    for name in order:
        print(f"host load during the {name} run: {loads[name]} (its own qemu counts ~2)")
    print(table(reports))
    for name in order:
        print(f"{name} console logs: {top / name}/console.log.txt, capture-console.log")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"loads": loads, **{k: asdict(v) for k, v in reports.items()}},
                indent=1,
            )
        )
    if not args.keep:
        for name in order:
            for big in ("disk.qcow2", "deb"):
                path = top / name / big
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    failed = any(r.failed is not None for r in reports.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
