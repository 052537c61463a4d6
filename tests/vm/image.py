"""Build what the VM proof boots: a Debian kernel and an initramfs holding Python and kdumpd.

The initramfs carries busybox-static, Debian's /usr/bin/python3.11 with only the stdlib and pip
modules that kdumpd's capture and arming commands import (found by importing them on this host),
compiled to .pyc, the repository's kdumpd/ package, ssh/scp for the SSH case, and the kernel
modules for virtio disks, ext4, virtio-net and fw_cfg.  Trimming matters: the capture kernel
unpacks the initramfs into its own small reservation (crashkernel=), so every megabyte here is a
megabyte less for the capture.

Images are cached by the hash of everything that goes into them under
``/var/tmp/kdumpd-test-cache/vm/`` (``KDUMPD_TEST_CACHE``); the kernel package is fetched once with
``apt-get download`` into ``~/.cache/kdumpd-fixtures`` (shared with ../shared/tools/make-vmcore.sh).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
TEST_CACHE = Path(os.environ.get("KDUMPD_TEST_CACHE", "/var/tmp/kdumpd-test-cache"))
FIXTURE_CACHE = Path(
    os.environ.get("KDUMPD_FIXTURE_CACHE", Path.home() / ".cache" / "kdumpd-fixtures")
)
KERNEL_PACKAGE = os.environ.get("KDUMPD_VM_KPKG", "linux-image-6.1.0-56-amd64")
GUEST_MODULES = [
    "qemu_fw_cfg",
    "virtio_pci",
    "virtio_blk",
    "crc32c_generic",
    "ext4",
]
# loaded only when a case brings up the network (SSH, NFS targets)
NET_MODULES = ["virtio_net", "nfsv4"]
GUEST_BINARIES = ["/usr/bin/ssh", "/usr/bin/scp", "/usr/bin/mount", "/usr/bin/umount"]
# mount(8) runs its helpers from /sbin
GUEST_HELPERS = {"/usr/sbin/mount.nfs": "/sbin/mount.nfs"}
# The guest takes numpy and zstandard from Debian 12's packages, as the kdumpd .deb
# does (it depends on them), not from the venv: that proves the code on Debian's versions, and
# pip's numpy wheel brings a 25 MiB OpenBLAS that a capture kernel would have to unpack into its
# reserved memory.  They are fetched with apt-get download and unpacked, never installed.
DEBIAN_PACKAGES = [
    "python3-numpy",
    "python3-zstandard",
    "libblas3",
    "liblapack3",
    "libgfortran5",
]
# What the guest runs: every kdumpd module except the D-Bus service, plus the stdlib modules that
# only error paths import lazily (so a failure in the capture kernel is reported, not hidden by an
# ImportError).
PY_ENTRY_MODULES = [
    "encodings.latin_1",
    "encodings.ascii",
    "traceback",
    "json",
    "shlex",
    # codecs the engine imports only when a dump asks for them
    "zstandard",
    "zlib",
    "lzo",
]
PY_SKIP_PACKAGES = ("kdumpd.service",)
INVENTORY_SCRIPT = r"""
import importlib, json, pkgutil, sys
import kdumpd
names = list(sys.argv[2:])
skip = tuple(sys.argv[1].split(","))
for info in pkgutil.walk_packages(kdumpd.__path__, "kdumpd."):
    if not info.name.startswith(skip):
        names.append(info.name)
errors = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as exc:  # a module of a peer that is half-written must not stop the build
        errors[name] = repr(exc)
files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
print(json.dumps({"files": files, "errors": errors, "prefix": sys.base_prefix,
                  "version": "%d.%d" % sys.version_info[:2]}))
"""


class ImageError(RuntimeError):
    """The guest image cannot be built on this machine (a message says what is missing)."""


@dataclass(frozen=True)
class Kernel:
    root: Path  # the unpacked linux-image package
    release: str

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.release}"


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=True, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


def _download(pkg: str, debs: Path) -> Path:
    """The newest cached .deb of pkg, fetched with apt-get download (after apt-get update when
    the package lists are too old to know it)."""
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        try:
            _run(["apt-get", "download", pkg], cwd=debs)
        except subprocess.CalledProcessError:
            try:
                _run(["apt-get", "update"])
                _run(["apt-get", "download", pkg], cwd=debs)
            except subprocess.CalledProcessError as exc:
                raise ImageError(f"apt-get download {pkg} failed: {exc.stderr}") from exc
        found = sorted(debs.glob(f"{pkg}_*.deb"))
    return found[-1]


def kernel() -> Kernel:
    """The Debian kernel package, downloaded and unpacked once into the fixture cache."""
    debs = FIXTURE_CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    deb = _download(KERNEL_PACKAGE, debs)
    version = _run(["dpkg-deb", "-f", str(deb), "Version"]).stdout.strip()
    root = FIXTURE_CACHE / "kernel" / f"{KERNEL_PACKAGE}_{version}"
    if not (root / ".complete").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        (root / ".complete").touch()
    release = os.listdir(root / "lib" / "modules")[0]
    return Kernel(root, release)


def debian_packages() -> list[Path]:
    """DEBIAN_PACKAGES unpacked under the fixture cache (downloaded once); their roots."""
    debs = FIXTURE_CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    roots = []
    for pkg in DEBIAN_PACKAGES:
        deb = _download(pkg, debs)
        root = FIXTURE_CACHE / "unpacked" / deb.stem
        if not (root / ".complete").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            _run(["dpkg-deb", "-x", str(deb), str(root)])
            (root / ".complete").touch()
        roots.append(root)
    return roots


def _copy(src: Path, dest_root: Path, dest: str | None = None) -> None:
    target = dest_root / (dest or str(src)).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, target, follow_symlinks=True)


def _libraries(binary: Path, env: dict[str, str] | None = None) -> list[Path]:
    """Shared libraries a binary or extension module loads, as ldd resolves them here."""
    out = subprocess.run(["ldd", str(binary)], text=True, capture_output=True, env=env).stdout
    if "not found" in out:
        raise ImageError(f"{binary}: unresolved libraries:\n{out}")
    return [Path(p) for p in re.findall(r"(/\S+\.so[^\s]*)", out)]


def _site_of(f: Path) -> Path | None:
    return next((p for p in f.parents if p.name in ("site-packages", "dist-packages")), None)


def _stage_python(stage: Path) -> list[str]:
    """Copy the interpreter and the modules kdumpd needs; return import errors seen on the host."""
    deb_roots = debian_packages()
    deb_site = [r / "usr/lib/python3/dist-packages" for r in deb_roots]
    lib_dirs = [r / "usr/lib/x86_64-linux-gnu" for r in deb_roots]
    deb_libs = [d for top in lib_dirs if top.is_dir() for d in [top, *top.rglob("*")] if d.is_dir()]
    venv_site = sorted((REPO / ".venv/lib").glob("python3*/site-packages"))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(map(str, [REPO, *deb_site, *venv_site]))
    env["LD_LIBRARY_PATH"] = os.pathsep.join(map(str, deb_libs))
    interpreter = Path(f"/usr/bin/python{sys.version_info[0]}.{sys.version_info[1]}")
    res = _run(
        [
            str(interpreter),
            "-s",
            "-c",
            INVENTORY_SCRIPT,
            ",".join(PY_SKIP_PACKAGES),
            *PY_ENTRY_MODULES,
        ],
        cwd=REPO,
        env=env,
    )
    inv = json.loads(res.stdout)
    version = inv["version"]
    stdlib = Path(inv["prefix"]) / "lib" / f"python{version}"
    _copy(interpreter, stage)
    binaries: list[Path] = [interpreter, *map(Path, GUEST_BINARIES), *map(Path, GUEST_HELPERS)]
    for b in GUEST_BINARIES:
        _copy(Path(b), stage)
    for src, dest in GUEST_HELPERS.items():
        _copy(Path(src), stage, dest)
    for name in inv["files"]:
        f = Path(name)
        if f.is_relative_to(REPO / "kdumpd"):
            continue  # the package is copied whole below
        site = _site_of(f)
        dest = str(f) if site is None else "/opt/kdumpd/site/" + str(f.relative_to(site))
        _copy(f, stage, dest)
        if f.suffix == ".so":
            binaries.append(f)
    for b in binaries:
        for lib in _libraries(b, env):
            site = _site_of(lib)
            if site is not None:
                # wheels carry libraries beside the package (numpy.libs, drgn.libs): keep the
                # relative layout so the extension's $ORIGIN rpath still finds them
                _copy(lib, stage, "/opt/kdumpd/site/" + str(lib.relative_to(site)))
            elif any(lib.is_relative_to(r) for r in deb_roots):
                # unpacked, not installed: no alternatives links, so straight into the lib dir
                _copy(lib, stage, f"/usr/lib/x86_64-linux-gnu/{lib.name}")
            else:
                _copy(lib, stage)
    _copy(Path("/lib64/ld-linux-x86-64.so.2"), stage)
    # os.py is the landmark by which the interpreter finds its prefix
    _copy(stdlib / "os.py", stage)
    shutil.copytree(
        REPO / "kdumpd",
        stage / "opt/kdumpd/site/kdumpd",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    _run(
        [
            str(interpreter),
            "-m",
            "compileall",
            "-q",
            "-b",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            "-s",
            str(stage),
            "-p",
            "/",
            str(stage / "opt"),
            str(stage / "usr/lib"),
        ]
    )
    # sourceless: the .pyc sits where the .py was and the source is dropped, which saves
    # space and the compile at every start (tracebacks still name file and line)
    for src in stage.rglob("*.py"):
        src.unlink()
    for name, module in (("kdump-config", "kdump_config"), ("kdumpd-capture", "capture")):
        script = stage / "usr/sbin" / name
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(
            f"#!/usr/bin/python{version} -s\n"
            "import sys\n"
            f"from kdumpd.cli.{module} import main\n"
            "sys.exit(main())\n"
        )
        script.chmod(0o755)
    return [f"{k}: {v}" for k, v in inv["errors"].items()]


def _stage_modules(stage: Path, k: Kernel) -> None:
    if not (k.root / "lib/modules" / k.release / "modules.dep").exists():
        _run(["depmod", "-b", str(k.root), k.release])
    modules = set()
    for m in GUEST_MODULES + NET_MODULES:
        out = subprocess.run(
            ["modprobe", "-d", str(k.root), "-S", k.release, "--show-depends", m],
            text=True,
            capture_output=True,
        ).stdout
        modules.update(line.split()[1] for line in out.splitlines() if line.startswith("insmod"))
    for f in sorted(modules):
        _copy(Path(f), stage, "/" + str(Path(f).relative_to(k.root)))
    moddir = k.root / "lib/modules" / k.release
    for extra in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (moddir / extra).exists():
            _copy(moddir / extra, stage, f"/lib/modules/{k.release}/{extra}")
    _run(["depmod", "-b", str(stage), k.release])
    (stage / "etc").mkdir(exist_ok=True)
    (stage / "etc/kdumpd-vm-modules").write_text("\n".join(GUEST_MODULES) + "\n")
    (stage / "etc/kdumpd-vm-net-modules").write_text("\n".join(NET_MODULES) + "\n")


def _tree_digest(stage: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(stage):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            h.update(str(p.relative_to(stage)).encode() + b"\0")
            h.update(os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
    return h.hexdigest()[:20]


@dataclass(frozen=True)
class Image:
    kernel: Kernel
    initrd: Path  # small: busybox, /init, kernel modules
    sysroot: Path  # the root file system the guest switches into (Python, kdumpd, ssh …)
    import_errors: list[str]


def _skeleton(stage: Path) -> None:
    for d in ("bin", "dev", "proc", "sys", "tmp", "run", "root", "etc/default"):
        (stage / d).mkdir(parents=True, exist_ok=True)
    _copy(Path("/bin/busybox"), stage)
    (stage / "bin/sh").symlink_to("busybox")


def _initrd(stage: Path, k: Kernel, out_dir: Path) -> Path:
    _skeleton(stage)
    (stage / "sbin").symlink_to("bin")
    _copy(HERE / "guest_init.sh", stage, "/init")
    (stage / "init").chmod(0o755)
    _stage_modules(stage, k)
    initrd = out_dir / f"initrd-{k.release}-{_tree_digest(stage)}.cpio.zst"
    if not initrd.exists():
        tmp_out = initrd.with_suffix(f".tmp{os.getpid()}")
        files = subprocess.run(
            ["find", "."], cwd=stage, check=True, capture_output=True
        ).stdout.splitlines()
        cpio = subprocess.run(
            ["cpio", "-o", "-H", "newc", "--quiet", "--reproducible"],
            cwd=stage,
            input=b"\n".join(sorted(files)) + b"\n",
            check=True,
            capture_output=True,
        ).stdout
        # the kernel's zstd decoder needs a window it can allocate early: no --long
        subprocess.run(["zstd", "-q", "-9", "-T0", "-o", str(tmp_out)], input=cpio, check=True)
        tmp_out.rename(initrd)
    return initrd


def _sysroot(stage: Path, out_dir: Path) -> tuple[Path, list[str]]:
    _skeleton(stage)
    (stage / "sbin").mkdir()
    (stage / "var/crash").mkdir(parents=True)
    (stage / "var/lib/kdump").mkdir(parents=True)
    (stage / "boot").mkdir()
    (stage / "root/.ssh").mkdir(mode=0o700)
    (stage / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (stage / "etc/group").write_text("root:x:0:\n")
    for f in ("/etc/netconfig", "/etc/services", "/etc/protocols"):  # mount.nfs, ssh
        _copy(Path(f), stage)
    errors = _stage_python(stage)
    sysroot = out_dir / f"sysroot-{_tree_digest(stage)}"
    if not sysroot.exists():
        tmp = sysroot.with_name(f"{sysroot.name}.tmp{os.getpid()}")
        shutil.copytree(stage, tmp, symlinks=True)
        tmp.rename(sysroot)
    return sysroot, errors


def build() -> Image:
    """The kernel, the initramfs and the guest's root tree, each rebuilt only when it changed.

    Like a real capture boot (which mounts the machine's root file system), the guest keeps
    Python and kdumpd on a disk, not in the initramfs: an initramfs is unpacked into the capture
    kernel's reserved memory and stays there, while files on a disk are page cache that the
    kernel can drop.  So the memory the capture needs is measured as it would be in production.
    """
    k = kernel()
    out_dir = TEST_CACHE / "vm"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix="stage.") as tmp:
        initrd = _initrd(Path(tmp) / "initrd", k, out_dir)
        sysroot, errors = _sysroot(Path(tmp) / "sysroot", out_dir)
    for keep, pattern in ((initrd, "initrd-*.cpio.zst"), (sysroot, "sysroot-*")):
        _prune(out_dir, pattern, keep)
    return Image(k, initrd, sysroot, errors)


def _prune(out_dir: Path, pattern: str, keep: Path, count: int = 3) -> None:
    """Keep the cache bounded: the newest few images besides the one in use."""
    entries = sorted(out_dir.glob(pattern), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in [p for p in entries if p != keep][count:]:
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


if __name__ == "__main__":
    img = build()
    print(img.initrd, img.initrd.stat().st_size, img.sysroot, *img.import_errors, sep="\n")
