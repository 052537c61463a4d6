"""The one place where kdumpd touches system paths.

Every read of ``/proc``, ``/sys``, ``/boot``, ``/etc`` and ``/var`` goes through a
:class:`SystemRoot`. In production it is ``/``; tests lay out a whole machine under a
temporary directory, and admins inspect a mounted image with ``--root DIR`` (or ``KDUMPD_ROOT``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from kdumpd.errors import SystemReadError

ROOT_ENV = "KDUMPD_ROOT"


@dataclass(frozen=True)
class SystemRoot:
    """A machine's file system, seen from ``base`` (``/`` for the running system)."""

    base: Path = Path("/")

    @classmethod
    def from_env(cls, override: str | os.PathLike[str] | None = None) -> SystemRoot:
        """``--root`` wins over ``KDUMPD_ROOT``, which wins over ``/``."""
        chosen = override if override is not None else os.environ.get(ROOT_ENV)
        return cls(Path(chosen) if chosen else Path("/"))

    def path(self, system_path: str | PurePosixPath) -> Path:
        """Map an absolute system path (``/proc/cmdline``) to where it lives under this root."""
        rel = PurePosixPath(system_path)
        if not rel.is_absolute():
            raise ValueError(f"system path must be absolute: {system_path}")
        return self.base.joinpath(*rel.parts[1:])

    def exists(self, system_path: str) -> bool:
        return self.path(system_path).exists()

    def read_text(self, system_path: str) -> str | None:
        """The file's text, or None when it does not exist. Other failures are reported."""
        p = self.path(system_path)
        try:
            return p.read_text(encoding="utf-8", errors="replace")
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise SystemReadError(f"{system_path}: cannot read: {exc.strerror}") from exc

    def read_bytes(self, system_path: str) -> bytes | None:
        p = self.path(system_path)
        try:
            return p.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise SystemReadError(f"{system_path}: cannot read: {exc.strerror}") from exc

    def read_int(self, system_path: str) -> int | None:
        """A sysfs-style integer file (``/sys/kernel/kexec_crash_size``), None if absent."""
        text = self.read_text(system_path)
        if text is None:
            return None
        try:
            return int(text.strip(), 0)
        except ValueError as exc:
            raise SystemReadError(
                f"{system_path}: expected an integer, found {text.strip()!r}"
            ) from exc

    def listdir(self, system_path: str) -> list[str]:
        """Sorted entry names, or [] when the directory does not exist."""
        try:
            return sorted(os.listdir(self.path(system_path)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        except OSError as exc:
            raise SystemReadError(f"{system_path}: cannot list: {exc.strerror}") from exc
