"""kdumpd-capture against Debian's makedumpfile on the same vmcores: wall time, CPU, peak RSS, size.

    .venv/bin/python bench/capture_bench.py                     # fixture + generated, 3 rounds
    .venv/bin/python bench/capture_bench.py --large             # also the 4 GiB guest
    .venv/bin/python bench/capture_bench.py --large --huge      # and the 12 GiB guest
    .venv/bin/python bench/capture_bench.py --inputs fixture --rounds 5 --json out.json

Every run is one child process timed from fork to exit; its CPU time comes from wait4(), its
peak RSS from GNU time (see run_once for why not from wait4). Inputs are read once before the
rounds so the page cache is warm for every tool, the tools alternate within each round, and
outputs go to a scratch directory next to the inputs and are deleted after their size is taken.
The table shows the median wall and CPU time of the rounds, the largest peak RSS, and the ratios
kdumpd/makedumpfile (``-d 31 -c`` and ``-d 31 -l``). A second table compares the pfns that both
tools dump at ``-d 31`` (bitmap 2 of the first round's ``-l`` outputs).

Generated vmcores come from tests/vmcores.py (made on first use, cached per machine).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import numpy as np  # noqa: E402
import vmcores  # noqa: E402 - the test helper that makes and caches vmcores

from kdumpd.dumpfile.kdump_reader import KdumpSource  # noqa: E402

FIXTURE = vmcores.CACHE / "vmcore-6.1-kexec"
FIXTURE_ZST = REPO.parent / "shared" / "fixtures" / "vmcore-6.1-kexec.zst"
KDUMPD = [str(REPO / ".venv" / "bin" / "kdumpd-capture")]
DEFAULT_INPUTS = ["fixture", *vmcores.SPECS]
MDF_L, KDUMPD_L = "makedumpfile -d 31 -l", "kdumpd-capture -d 31 -l"
LARGE = ["bench-deb12-6.1-4g"]
HUGE = ["bench-deb12-6.1-12g"]


@dataclass(frozen=True)
class Tool:
    name: str
    argv: tuple[str, ...]  # without input and output
    makedumpfile: bool


@dataclass
class Run:
    input: str
    tool: str
    wall: float
    cpu: float
    rss_kib: int
    anon_kib: int
    size: int
    error: str = ""  # the last line of a failed run's output; its numbers are meaningless


@dataclass(frozen=True)
class Input:
    name: str
    ram_mib: int  # size of the vmcore, about the guest's RAM
    for_kdumpd: Path
    for_makedumpfile: Path  # QEMU's ELF needs the rewritten copy


def tools(threads: int | None) -> list[Tool]:
    out = [
        Tool("makedumpfile -d 31 -c", ("makedumpfile", "-d", "31", "-c"), True),
        Tool(MDF_L, ("makedumpfile", "-d", "31", "-l"), True),
    ]
    version = subprocess.run(["makedumpfile", "-v"], capture_output=True, text=True).stdout
    if "zstd\tenabled" in version:
        out.append(Tool("makedumpfile -d 31 -z", ("makedumpfile", "-d", "31", "-z"), True))
    extra = ("--threads", str(threads)) if threads else ()
    out += [
        Tool("kdumpd-capture -d 31", (*KDUMPD, "-d", "31", *extra), False),
        Tool(KDUMPD_L, (*KDUMPD, "-d", "31", "-l", *extra), False),
    ]
    return out


def resolve(name: str) -> Input:
    if name == "fixture":
        if not FIXTURE.exists():
            tmp = FIXTURE.with_name(FIXTURE.name + f".tmp{os.getpid()}")
            subprocess.run(
                ["zstd", "-q", "-d", "--long=27", "-o", str(tmp), str(FIXTURE_ZST)], check=True
            )
            tmp.rename(FIXTURE)
        return Input(name, _ram_mib(FIXTURE), FIXTURE, FIXTURE)
    made = vmcores.ensure(name)
    return Input(name, _ram_mib(made.vmcore), made.vmcore, made.makedumpfile_input)


def _ram_mib(path: Path) -> int:
    return round(path.stat().st_size / (1 << 20))


def warm(path: Path) -> None:
    """Read the file once so that every tool finds it in the page cache."""
    with path.open("rb") as f:
        while f.read(1 << 24):
            pass


def run_once(tool: Tool, src: Input, scratch: Path, niceness: int, keep: bool = False) -> Run:
    """One timed run; with KEEP the output stays as scratch/<tool name> for comparison."""
    out = scratch / (tool.name if keep else "out.dump")
    inp = src.for_makedumpfile if tool.makedumpfile else src.for_kdumpd
    # Peak RSS comes from GNU time, not from our own wait4(): Linux carries the RSS high-water
    # mark of the address space a process had before exec() into its rusage, so a child forked
    # from this Python process would report at least our RSS. time is small; its child is not.
    rss_file = scratch / "rss"
    argv = ["/usr/bin/time", "-f", "%M", "-o", str(rss_file)]
    argv += ["nice", "-n", str(niceness), *tool.argv, str(inp), str(out)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sampler = AnonSampler(proc.pid)
    sampler.start()
    assert proc.stdout is not None
    log = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    sampler.finish()
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc  # reaped by wait4 above, not by Popen
    cpu = usage.ru_utime + usage.ru_stime  # time's own share is negligible
    rss = int(rss_file.read_text().split()[-1])
    if rc != 0:
        last = (log.decode(errors="replace").strip().splitlines() or [""])[-1]
        out.unlink(missing_ok=True)
        return Run(src.name, tool.name, wall, cpu, rss, sampler.peak_kib, 0, f"rc={rc}: {last}")
    size = out.stat().st_size
    if not keep:
        out.unlink()
    return Run(src.name, tool.name, wall, cpu, rss, sampler.peak_kib, size)


class AnonSampler(threading.Thread):
    """Peak RssAnon of the tool (the child of GNU time), polled every few milliseconds.

    Total RSS counts the input's page-cache pages that a tool maps, which a capture kernel does
    not pay for: /proc/vmcore is mapped as PFN ranges, outside RSS. Anonymous memory is what has
    to fit in the crashkernel reservation. Polling can miss a spike shorter than its period.
    """

    def __init__(self, time_pid: int) -> None:
        super().__init__(daemon=True)
        self._children = Path(f"/proc/{time_pid}/task/{time_pid}/children")
        self._done = threading.Event()
        self.peak_kib = 0

    def run(self) -> None:
        while not self._done.is_set():
            try:
                for pid in self._children.read_text().split():
                    status = Path(f"/proc/{pid}/status").read_text()
                    anon = int(status.split("RssAnon:")[1].split()[0])
                    self.peak_kib = max(self.peak_kib, anon)
            except (OSError, IndexError, ValueError):
                pass  # not started yet or just gone
            self._done.wait(0.003)

    def finish(self) -> None:
        self._done.set()
        self.join()


def compare_pfns(ours: Path, theirs: Path) -> str:
    """Bitmap 2 of two -d 31 dumps: pfns kept by makedumpfile, by kdumpd, and in only one."""
    with KdumpSource(str(ours)) as a, KdumpSource(str(theirs)) as b:
        mine, ref = a.present_bitmap(), b.present_bitmap()
    n = min(len(mine), len(ref))  # max_mapnr may differ by a partial last page
    count = np.unpackbits
    only_ours = int(count(mine[:n] & ~ref[:n]).sum()) + int(count(mine[n:]).sum())
    only_ref = int(count(ref[:n] & ~mine[:n]).sum()) + int(count(ref[n:]).sum())
    return f"{int(count(ref).sum())} / {int(count(mine).sum())} / {only_ours}, {only_ref}"


def header(args: argparse.Namespace, load_before: float) -> str:
    """When, where and with what the numbers were taken: they mean little without it."""
    mdf = subprocess.run(["makedumpfile", "-v"], capture_output=True, text=True).stdout
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {os.cpu_count()} CPUs, "
        f"load average {load_before:.1f} before and {os.getloadavg()[0]:.1f} after, "
        f"nice {args.nice}, {args.rounds} rounds; {mdf.splitlines()[0] if mdf else 'makedumpfile'}"
        f"; kdumpd {rev}\n"
    )


def table(runs: list[Run], rounds: int, inputs: dict[str, Input]) -> str:
    rows = [
        f"| input | vmcore MiB | tool | wall s (median of {rounds}) | CPU s | peak RSS MiB "
        "| peak anon MiB | output MiB | wall / mdf -c | wall / mdf -l | CPU / mdf -c "
        "| RSS / mdf -c | size / mdf -c |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by_input: dict[str, dict[str, list[Run]]] = {}
    failed: list[str] = []
    for r in runs:
        if r.error:
            failed.append(f"- {r.input}, {r.tool}: FAILED {r.error}")
        else:
            by_input.setdefault(r.input, {}).setdefault(r.tool, []).append(r)
    for name, per_tool in by_input.items():
        stats = {
            tool: (
                statistics.median(r.wall for r in rs),
                statistics.median(r.cpu for r in rs),
                max(r.rss_kib for r in rs) / 1024,
                max(r.anon_kib for r in rs) / 1024,
                rs[-1].size / (1 << 20),
            )
            for tool, rs in per_tool.items()
        }
        ref_c = stats.get("makedumpfile -d 31 -c")
        ref_l = stats.get("makedumpfile -d 31 -l")
        ram = inputs[name].ram_mib
        for tool, (wall, cpu, rss, anon, size) in stats.items():
            ratios = ["", "", "", "", ""]
            if tool.startswith("kdumpd") and ref_c and ref_l:
                ratios = [
                    f"{wall / ref_c[0]:.2f}",
                    f"{wall / ref_l[0]:.2f}",
                    f"{cpu / ref_c[1]:.2f}",
                    f"{rss / ref_c[2]:.2f}",
                    f"{size / ref_c[4]:.2f}",
                ]
            rows.append(
                f"| {name} | {ram} | {tool} | {wall:.2f} | {cpu:.2f} | {rss:.1f} | {anon:.1f} "
                f"| {size:.1f} | " + " | ".join(ratios) + " |"
            )
    return "\n".join(rows + (["", *sorted(set(failed))] if failed else []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", help=f"comma-separated (default: {','.join(DEFAULT_INPUTS)})")
    parser.add_argument("--large", action="store_true", help=f"add {', '.join(LARGE)}")
    parser.add_argument("--huge", action="store_true", help=f"add {', '.join(HUGE)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, help="kdumpd-capture --threads (default: its own)")
    parser.add_argument("--only", choices=["makedumpfile", "kdumpd"], help="run one side only")
    parser.add_argument("--json", type=Path, help="also write every run here")
    parser.add_argument(
        "--nice",
        type=int,
        default=5,
        help="niceness of the measured runs (default 5: shared hosts)",
    )
    args = parser.parse_args(argv)
    names = args.inputs.split(",") if args.inputs else list(DEFAULT_INPUTS)
    names += (LARGE if args.large else []) + (HUGE if args.huge else [])
    selected = [
        t
        for t in tools(args.threads)
        if args.only is None or t.makedumpfile == (args.only == "makedumpfile")
    ]
    load_before = os.getloadavg()[0]
    decisions: dict[str, str] = {}
    runs: list[Run] = []
    inputs: dict[str, Input] = {}
    for name in names:
        print(f"bench: preparing {name}", file=sys.stderr, flush=True)
        src = inputs[name] = resolve(name)
        for path in {src.for_kdumpd, src.for_makedumpfile}:
            warm(path)
        scratch = Path(tempfile.mkdtemp(prefix="kdumpd-bench.", dir=vmcores.CACHE))
        try:
            for round_no in range(args.rounds):
                for tool in selected:
                    keep = round_no == 0 and tool.name in (MDF_L, KDUMPD_L)
                    run = run_once(tool, src, scratch, args.nice, keep)
                    runs.append(run)
                    print(
                        f"bench: {name} round {round_no + 1} {tool.name}: {run.wall:.2f} s, "
                        f"{run.rss_kib / 1024:.1f} MiB, {run.size} bytes {run.error}",
                        file=sys.stderr,
                        flush=True,
                    )
            kept = [scratch / MDF_L, scratch / KDUMPD_L]
            if all(p.exists() for p in kept):
                decisions[name] = compare_pfns(kept[1], kept[0])
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(header(args, load_before))
    print(table(runs, args.rounds, inputs))
    if decisions:
        print("\n| input | -d 31 pfns dumped: makedumpfile / kdumpd / only kdumpd, only mdf |")
        print("|---|---|")
        for name, text in decisions.items():
            print(f"| {name} | {text} |")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in runs], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
