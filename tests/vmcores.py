"""Real vmcores that the project makes itself, on demand, cached once per machine.

Each entry of ``SPECS`` is one run of ``../shared/tools/make-vmcore.sh`` (a Debian kernel in qemu
that crashes and is captured by a real crash kernel, or whose memory QEMU dumps). The result
directory holds ``vmcore`` and makedumpfile's reference results for it (``makedumpfile-d31.kdump``,
``dmesg.txt``, ``show-stats-d31.txt``, ``vmcoreinfo.txt``, ``info.txt``; for MODE=qemu also
``vmcore.fixed.elf``, the copy that makedumpfile can read).

Results live in ``$KDUMPD_TEST_CACHE/gen/<name>/`` (default ``/var/tmp/kdumpd-test-cache``). A
directory is built under a temporary name and renamed only when make-vmcore.sh succeeded, so a
directory that exists is complete. A per-name lock serialises concurrent test sessions: the second
one waits and then reuses the first one's result. ``spec.json`` records the parameters; when a spec
changes, the next request rebuilds it.

Debian 13 kernels come from a private apt state under the cache (its own sources.list, lists and
package caches); the machine's apt configuration is never touched. The downloaded package is put
where make-vmcore.sh looks for it (``$CACHE/debs``), so the script only unpacks it.

Use from tests through the session fixtures of ``tests/integration/conftest.py``, or by hand:

    .venv/bin/python tests/vmcores.py            # make all (about 3-4 min under TCG)
    .venv/bin/python tests/vmcores.py --list     # names, parameters, state
    .venv/bin/python tests/vmcores.py deb13-6.12-thp
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO.parent / "shared" / "tools"
CACHE = Path(os.environ.get("KDUMPD_TEST_CACHE", "/var/tmp/kdumpd-test-cache"))
GEN = CACHE / "gen"
KERNELS = CACHE / "kernels"  # make-vmcore.sh's CACHE: debs/ and kernel/<pkg>_<version>/
DEBIAN_MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class VmcoreGenerationError(RuntimeError):
    """make-vmcore.sh or the kernel download failed; the message says where the log is."""


@dataclass(frozen=True)
class VmcoreSpec:
    name: str
    what: str
    # "" uses the machine's apt (Debian 12); another suite is fetched through a private apt state
    suite: str = ""
    env: Mapping[str, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {"suite": self.suite, "env": dict(self.env)}


SPECS: dict[str, VmcoreSpec] = {
    s.name: s
    for s in (
        VmcoreSpec(
            "deb12-6.1-1g",
            "Debian 12 6.1 amd64, 1 GiB, a bigger and differently mixed workload than the fixture",
            env={
                "MEM": "1G",
                "CRASHKERNEL": "192M",
                "DATA_MB": "40",
                "DIRTY_MB": "12",
                "HOG_MB": "160",
                "HOG_ZERO_PCT": "10",
                "HOG_RAND_PCT": "3",
                "SHM_TEXT_MB": "24",
                "SHM_ZERO_MB": "4",
                "SHM_RAND_MB": "2",
            },
        ),
        VmcoreSpec(
            "deb13-6.12-thp",
            "Debian 13 6.12 amd64, 1.5 GiB so that transparent huge pages are on",
            suite="trixie",
            env={"MEM": "1536M", "CRASHKERNEL": "192M", "HOG_MB": "256", "HOG_ZERO_PCT": "20"},
        ),
        VmcoreSpec(
            "deb12-6.1-qemu",
            "Debian 12 6.1 amd64, 640 MiB, written by QEMU dump-guest-memory (no crash)",
            env={"MODE": "qemu"},
        ),
    )
}

# Large inputs for bench/ only (minutes of TCG each): how cost grows with RAM. Free memory is
# not scrubbed: -d 31 never reads free pages, and scrubbing GiBs under TCG takes long.
BENCH_SPECS: dict[str, VmcoreSpec] = {
    s.name: s
    for s in (
        VmcoreSpec(
            "bench-deb12-6.1-4g",
            "Debian 12 6.1 amd64, 4 GiB guest, 1 GiB of user memory",
            env={
                "MEM": "4G",
                "CRASHKERNEL": "256M",
                "SCRUB": "0",
                "DATA_MB": "128",
                "HOG_MB": "1024",
                "SHM_TEXT_MB": "64",
                "TIMEOUT": "1800",
            },
        ),
        VmcoreSpec(
            "bench-deb12-6.1-12g",
            "Debian 12 6.1 amd64, 12 GiB guest, 2 GiB of user memory",
            env={
                "MEM": "12G",
                "CRASHKERNEL": "384M",
                "SCRUB": "0",
                "DATA_MB": "128",
                "HOG_MB": "2048",
                "SHM_TEXT_MB": "64",
                "TIMEOUT": "3600",
            },
        ),
    )
}
ALL_SPECS = SPECS | BENCH_SPECS


@dataclass(frozen=True)
class GeneratedVmcore:
    name: str
    dir: Path

    @property
    def vmcore(self) -> Path:
        return self.dir / "vmcore"

    @property
    def makedumpfile_input(self) -> Path:
        """The file makedumpfile reads: QEMU's ELF needs the rewritten copy."""
        fixed = self.dir / "vmcore.fixed.elf"
        return fixed if fixed.exists() else self.vmcore

    @property
    def reference_kdump(self) -> Path:
        return self.dir / "makedumpfile-d31.kdump"

    @property
    def dmesg(self) -> Path:
        return self.dir / "dmesg.txt"

    @property
    def show_stats(self) -> Path:
        return self.dir / "show-stats-d31.txt"

    @property
    def vmcoreinfo(self) -> Path:
        return self.dir / "vmcoreinfo.txt"

    @property
    def info(self) -> Path:
        return self.dir / "info.txt"


def _nice() -> list[str]:
    return ["nice", "-n", "10"]


@contextmanager
def _locked(name: str) -> Iterator[None]:
    GEN.mkdir(parents=True, exist_ok=True)
    with (GEN / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _apt_options(state: Path) -> list[str]:
    """apt options that point every file apt reads or writes at STATE (the host's stay as is)."""
    return [
        "-o", f"Dir::Etc::SourceList={state / 'sources.list'}",
        "-o", "Dir::Etc::SourceParts=/dev/null",
        "-o", f"Dir::State::Lists={state / 'lists'}",
        "-o", f"Dir::Cache={state / 'cache'}",
        "-o", f"Dir::Cache::Archives={state / 'archives'}",
    ]  # fmt: skip


def _run(cmd: list[str], log: Path, cwd: Path | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{proc.stdout}{proc.stderr}\n")
    if proc.returncode != 0:
        raise VmcoreGenerationError(f"{cmd[0]} failed (rc={proc.returncode}), see {log}")
    return proc.stdout


def fetch_kernel(suite: str, log: Path, flavour: str = "amd64") -> str:
    """Fetch linux-image-FLAVOUR of SUITE into KERNELS/debs; return the versioned package name.

    The package lists are fetched once and refreshed only when the download fails (the mirror
    moved on to a newer kernel since).
    """
    state = CACHE / f"apt-{suite}"
    for sub in ("lists/partial", "cache/archives/partial", "archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(f"deb [signed-by={KEYRING}] {DEBIAN_MIRROR} {suite} main\n")
    opts = _apt_options(state)
    debs = KERNELS / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    for refresh in (False, True):
        if refresh or not any((state / "lists").glob("*_Packages*")):
            _run(["apt-get", *opts, "update"], log)
        package = _depends_on(_run(["apt-cache", *opts, "depends", f"linux-image-{flavour}"], log))
        if package is None:
            raise VmcoreGenerationError(f"no package behind linux-image-{flavour} in {suite}")
        try:
            if not any(debs.glob(f"{package}_*.deb")):
                _run(["apt-get", *opts, "download", package], log, cwd=debs)
            break
        except VmcoreGenerationError:
            if refresh:
                raise
    _unpack(max(debs.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime), log)
    return package


def _depends_on(apt_cache_depends: str) -> str | None:
    """The linux-image-<version> package that the metapackage depends on."""
    for line in apt_cache_depends.splitlines():
        words = line.split()
        if words[:1] == ["Depends:"] and len(words) > 1 and words[1].startswith("linux-image-"):
            return words[1]
    return None


def _unpack(deb: Path, log: Path) -> None:
    """Unpack DEB where make-vmcore.sh expects it, in the layout it expects.

    Debian 13 packages are merged-/usr (usr/lib/modules); the script and build-guest.sh look in
    lib/modules, so a ``lib -> usr/lib`` link bridges them. ``.complete`` tells the script that
    the directory is whole, as its own unpacking does.
    """
    package, version = deb.name.split("_")[:2]
    root = KERNELS / "kernel" / f"{package}_{version}"
    if (root / ".complete").exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    _run(["dpkg-deb", "-x", str(deb), str(root)], log)
    if not (root / "lib").exists() and (root / "usr" / "lib" / "modules").is_dir():
        (root / "lib").symlink_to("usr/lib")
    (root / ".complete").touch()


def _build(spec: VmcoreSpec, dest: Path) -> None:
    for stale in GEN.glob(f".{spec.name}.tmp-*"):  # left by a run that was killed; we hold the lock
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.tmp-", dir=GEN))
    tmp.chmod(0o755)  # mkdtemp makes it private; other users' test runs read the result
    log = tmp / "make-vmcore.log"
    env = dict(os.environ, TIMEOUT="900")
    env.update(spec.env)
    env.update({"OUT": str(tmp), "CACHE": str(KERNELS)})
    try:
        if spec.suite:
            env["KPKG"] = fetch_kernel(spec.suite, log)
        with log.open("a") as out:
            rc = _run_group([*_nice(), str(TOOLS / "make-vmcore.sh")], env, out)
        if rc != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            raise VmcoreGenerationError(f"make-vmcore.sh failed for {spec.name}:\n{tail}")
        (tmp / "spec.json").write_text(json.dumps(spec.as_json(), indent=1, sort_keys=True))
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    except BaseException:
        failed = GEN / f".{spec.name}.failed"
        shutil.rmtree(failed, ignore_errors=True)
        # keep the logs of a failed run for inspection, without the big images
        for big in ("vmcore", "vmcore.fixed.elf", "makedumpfile-d31.kdump"):
            (tmp / big).unlink(missing_ok=True)
        tmp.rename(failed)
        raise


def _run_group(cmd: list[str], env: dict[str, str], out: IO[str]) -> int:
    """Run CMD in its own process group; if we are interrupted, end the whole group (the script
    runs qemu in the background, which killing the script alone would leave running)."""
    proc = subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        return proc.wait()
    except BaseException:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait()
        raise


def _is_current(spec: VmcoreSpec, path: Path) -> bool:
    try:
        return bool(json.loads((path / "spec.json").read_text()) == spec.as_json())
    except (OSError, ValueError):
        return False


def ensure(name: str) -> GeneratedVmcore:
    """The generated vmcore NAME, made now if the cache has no current copy."""
    spec = ALL_SPECS[name]
    dest = GEN / name
    if not _is_current(spec, dest):
        with _locked(name):
            if not _is_current(spec, dest):
                _build(spec, dest)
    return GeneratedVmcore(name, dest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", help=f"default: {', '.join(SPECS)}; also {', '.join(BENCH_SPECS)}"
    )
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    names = args.names or (list(ALL_SPECS) if args.list else list(SPECS))
    if unknown := set(names) - set(ALL_SPECS):
        parser.error(f"unknown vmcore name(s): {', '.join(sorted(unknown))}")
    for name in names:
        spec = ALL_SPECS[name]
        if args.list:
            state = "ready" if _is_current(spec, GEN / name) else "missing"
            print(f"{name:20} {state:8} {spec.what}; suite={spec.suite or 'host'} {dict(spec.env)}")
            continue
        try:
            made = ensure(name)
        except VmcoreGenerationError as e:
            print(f"vmcores: {e}", file=sys.stderr)
            return 1
        print(f"{name}: {made.vmcore} ({made.vmcore.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
