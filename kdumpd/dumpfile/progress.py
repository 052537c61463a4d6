"""The console progress line, in makedumpfile's format (dump-formats.md §9).

``Copying data                                      : [ 42.0 %] /             eta: 3s``

On a terminal the line is redrawn in place with ``\\r``; otherwise (journal, serial console
captured to a file) each update is its own line.  Updates are throttled to one per second, except
the final 100 %.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

_SPINNER = "/|\\-"


def format_eta(seconds: int) -> str:
    if seconds < 100:
        return f"eta: {seconds}s"
    if seconds < 100 * 60:
        return f"eta: {seconds // 60}m{seconds % 60}s"
    if seconds < 48 * 3600:
        return f"eta: {seconds // 3600}h{seconds % 3600 // 60}m"
    if seconds < 100 * 86400:
        return f"eta: {seconds // 86400}d{seconds % 86400 // 3600}h"
    return "eta: >100day"


def format_line(label: str, permille: int, spin: int, elapsed: float) -> str:
    eta = max(0, int(elapsed * 1000 / permille - elapsed)) if permille > 0 else 0
    return (
        f"{label:<50s}: [{permille // 10:3d}.{permille % 10} %] {_SPINNER[spin % 4]}"
        f"  {format_eta(eta):>16s}"
    )


class Progress:
    """Reports ``done`` of ``total`` for one step; silent when ``stream`` is None."""

    def __init__(
        self,
        stream: TextIO | None,
        label: str,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream
        self.label = label
        self.interval = interval
        self.clock = clock
        self.tty = bool(stream is not None and stream.isatty())
        self._start = clock()
        self._last: float | None = None
        self._spin = 0
        self._done = False

    def update(self, done: int, total: int) -> None:
        if self.stream is None or self._done:
            return
        now = self.clock()
        final = done >= total
        if not final and self._last is not None and now - self._last < self.interval:
            return
        self._last = now
        permille = 1000 if final or total <= 0 else done * 1000 // total
        line = format_line(self.label, permille, self._spin, now - self._start)
        self._spin += 1
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self._done = final
