"""The capture-kernel job: save dmesg and the dump to every configured target, honestly.

Order per target, as kdump-tools, with every stage checked (kdump-tools' pipeline hides a failed
makedumpfile behind ``cat``'s exit status): create the stamp directory, write the metadata (still
"in progress", so a capture that dies leaves a truthful record), save ``dmesg.<stamp>``, write the
dump to ``dump-incomplete`` within the space budget, and only when all of that succeeded rename it
to ``dump.<stamp>``; then the final metadata, then KDUMP_NUM_DUMPS retention (local only).

Targets follow kdump-tools' rules: SSH when SSH is set, NFS when NFS is set, the local
KDUMP_COREDIR when neither is; SSH and NFS together write both.  FTP is not supported and says so.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from kdumpd.config import Config
from kdumpd.dumpfile.sink import Sink
from kdumpd.errors import KdumpdError
from kdumpd.savecore import layout, space
from kdumpd.savecore.hosttag import host_tag
from kdumpd.savecore.nfs import mounted
from kdumpd.savecore.ssh import SshDumpTarget
from kdumpd.savecore.targets import LocalTarget, Target, file_size
from kdumpd.system import SystemRoot

Log = Callable[[str], None]


@dataclass(frozen=True)
class CrashFacts:
    kernel_release: str | None
    crash_time: int | None  # seconds since the epoch
    vmcore_size: int
    page_size: int
    max_mapnr: int


@dataclass(frozen=True)
class DumpResult:
    pages: int
    bytes_written: int


class Engine(Protocol):
    """The capture engine as savecore uses it (kdumpd.savecore.engine adapts the real one)."""

    facts: CrashFacts
    dump_level: int
    format_name: str
    compression: str

    def dmesg(self) -> tuple[bytes, str | None]:
        """The log text, and an error when only its sound part could be read."""
        ...

    def dumpable_pages(self) -> int:
        """Pages the dump level keeps (the classifier's count), computed once."""
        ...

    def estimate(self) -> int:
        """Upper bound of the dump's size in bytes."""
        ...

    def write(self, sink: Sink, flattened: bool) -> DumpResult: ...


@dataclass
class Outcome:
    where: str
    status: str
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == layout.STATUS_COMPLETE and not self.errors


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 20):.1f} MiB"


class Capture:
    """One capture run over several targets, sharing dmesg and the page selection."""

    def __init__(
        self,
        cfg: Config,
        engine: Engine,
        log: Log,
        clock: Callable[[], float] = time.time,
        boot_to_start: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.log = log
        self.clock = clock
        self.boot_to_start = boot_to_start
        self._dmesg: bytes | None = None
        self._dmesg_error: str | None = None
        self._dmesg_seconds = 0.0
        self._dmesg_done = False

    def _crash_dmesg(self) -> bytes | None:
        if not self._dmesg_done:
            t0 = time.monotonic()
            try:
                self._dmesg, self._dmesg_error = self.engine.dmesg()
            except KdumpdError as exc:
                self._dmesg_error = f"dmesg: {exc}"
            self._dmesg_seconds = time.monotonic() - t0
            self._dmesg_done = True
        return self._dmesg

    def _metadata(self, target: Target) -> layout.Metadata:
        facts = self.engine.facts
        when = facts.crash_time if facts.crash_time is not None else int(self.clock())
        meta = layout.Metadata(
            id=target.dir_id,
            target=target.kind,
            kernel_release=facts.kernel_release,
            crash_time=facts.crash_time,
            timestamp_us=when * 1_000_000,
            dump_level=self.engine.dump_level,
            format="flattened" if target.flattened else self.engine.format_name,
            compression=self.engine.compression,
        )
        meta.sizes["vmcore"] = facts.vmcore_size
        if self.boot_to_start is not None:
            meta.durations["boot_to_start"] = self.boot_to_start
        return meta

    def save(self, target: Target) -> Outcome:
        """Everything for one target; never raises for a failure of the capture itself."""
        start = time.monotonic()
        try:
            target.prepare(self.clock())
        except KdumpdError as exc:
            return Outcome(target.where, layout.STATUS_INCOMPLETE, [str(exc)])
        self.log(f"kdumpd-capture: saving to {target.where}")
        meta = self._metadata(target)
        try:
            target.write_file(layout.METADATA_FILE, meta.to_json())
            self._save_dmesg(target, meta)
            committed = self._save_dump(target, meta)
        except KdumpdError as exc:  # the target itself failed (remote gone, disk error)
            meta.errors.append(str(exc))
            committed = False
        except Exception as exc:
            # a bug must not cost the other targets nor the truthful metadata of this one
            meta.errors.append(f"internal error: {type(exc).__name__}: {exc}")
            self.log(f"kdumpd-capture: internal error: {type(exc).__name__}: {exc}")
            committed = False
        meta.status = layout.final_status(
            committed, meta.files.get("dump") is not None, meta.files.get("dmesg") is not None
        )
        if committed:
            meta.errors += target.retention(self.cfg.num_dumps)
        meta.in_progress = False
        meta.durations["total"] = time.monotonic() - start
        meta.peak_rss_bytes = _peak_rss()
        try:
            target.write_file(layout.METADATA_FILE, meta.to_json())
        except KdumpdError as exc:
            meta.errors.append(f"metadata: {exc}")
        return Outcome(target.where, meta.status, meta.errors)

    def _save_dmesg(self, target: Target, meta: layout.Metadata) -> None:
        if not self.cfg.dump_dmesg:
            return
        text = self._crash_dmesg()
        meta.durations["dmesg"] = self._dmesg_seconds
        if text is None:
            meta.errors.append(self._dmesg_error or "dmesg: not available")
            self.log(f"kdumpd-capture: {self._dmesg_error}")
            return
        if self._dmesg_error:  # a damaged log: its sound part is saved, the damage reported
            meta.errors.append(self._dmesg_error)
        name = layout.dmesg_file_name(target.stamp)
        target.write_file(name, text)
        meta.files["dmesg"] = name
        meta.sizes["dmesg"] = len(text)
        meta.panic_message = panic_message(text)
        self.log(f"kdumpd-capture: saved dmesg ({len(text)} bytes) in {target.where}")

    def _save_dump(self, target: Target, meta: layout.Metadata) -> bool:
        t0 = time.monotonic()
        try:
            meta.pages["dumpable"] = self.engine.dumpable_pages()
            estimate = self.engine.estimate()
        except KdumpdError as exc:
            meta.errors.append(f"page selection: {exc}")
            self.log(f"kdumpd-capture: page selection failed: {exc}")
            return False
        meta.sizes["estimate"] = estimate
        budget = None
        try:
            plan: space.SpacePlan | None = target.space()
        except space.SpaceError as exc:
            # Not knowing the space is no reason to lose the dump: it goes out unbounded.
            self.log(f"kdumpd-capture: {exc}; writing the dump without a space budget")
            plan = None
        if plan is not None:
            budget = plan.budget
            meta.sizes["free_before"] = plan.free
            meta.sizes["budget"] = budget
            if estimate > budget:
                self.log(
                    f"kdumpd-capture: the dump may need up to {_mib(estimate)}, "
                    f"{_mib(budget)} can be used ({_mib(plan.free)} free, "
                    f"{_mib(plan.reserve)} kept free): it will stop there, marked incomplete"
                )
        meta.files["dump"] = layout.INCOMPLETE_NAME
        output = target.open_dump(budget)
        error: str | None = None
        written: int | None = None
        try:
            result = self.engine.write(output.sink, target.flattened)
            meta.pages["written"] = result.pages
            written = result.bytes_written
        except KdumpdError as exc:
            error = f"dump: {exc}"
        try:
            output.close()
        except KdumpdError as exc:
            error = error or f"dump: {exc}"
        meta.durations["dump"] = time.monotonic() - t0
        # a local file's size on disk; for a stream, the bytes the writer sent
        meta.sizes["dump"] = file_size(target, layout.INCOMPLETE_NAME) or written
        if error is not None:
            meta.errors.append(error)
            self.log(f"kdumpd-capture: {error}; the dump stays incomplete")
            return False
        if meta.errors:  # an earlier stage failed: the dump is kept but not called complete
            return False
        t1 = time.monotonic()
        meta.files["dump"] = target.commit()
        meta.durations["sync"] = time.monotonic() - t1
        self.log(
            f"kdumpd-capture: saved the dump ({_mib(meta.sizes['dump'])}) as "
            f"{target.where}/{meta.files['dump']} in {meta.durations['dump']:.1f} s"
        )
        return True


_PANIC_MARK = b"Kernel panic - not syncing: "


def panic_message(dmesg: bytes) -> str | None:
    """The text of the crashed kernel's panic line (the last one when it panicked twice)."""
    at = dmesg.rfind(_PANIC_MARK)
    if at < 0:
        return None
    end = dmesg.find(b"\n", at)
    line = dmesg[at + len(_PANIC_MARK) : end if end >= 0 else len(dmesg)]
    return line.decode("utf-8", "replace").strip()[:400] or None


@contextmanager
def targets_for(
    cfg: Config, root: SystemRoot, log: Log, tag: Callable[[str], str] = host_tag
) -> Iterator[tuple[list[Target], list[str]]]:
    """The configured targets, NFS mounted for the block; and messages for unusable ones."""
    problems: list[str] = []
    chosen: list[Target] = []
    with ExitStack() as stack:
        remote = cfg.ssh is not None or cfg.nfs is not None or cfg.ftp is not None
        host = tag(cfg.hosttag) if remote else None
        if cfg.ftp is not None:
            problems.append(f"FTP={cfg.ftp.host}: FTP targets are not supported by kdumpd")
        if cfg.ssh is not None and host is not None:
            chosen.append(
                SshDumpTarget(cfg.ssh, cfg.ssh_key, cfg.coredir, host, cfg.ssh_kdump_retry)
            )
        if cfg.nfs is not None:
            try:
                mountpoint = stack.enter_context(
                    mounted(
                        cfg.nfs,
                        root.path(cfg.coredir),
                        timeo=cfg.nfs_timeo,
                        retrans=cfg.nfs_retrans,
                        attempts=cfg.nfs_mount_retry,
                        log=log,
                    )
                )
                chosen.append(LocalTarget(mountpoint, kind="nfs", host=host))
            except KdumpdError as exc:
                problems.append(str(exc))
        if not remote:
            chosen.append(LocalTarget(root.path(cfg.coredir)))
        yield chosen, problems
