"""Print which versions of kdumpd's runtime dependencies this interpreter imports; fail unless
every one is Debian's packaged module (from /usr/lib/python3/dist-packages).

scripts/dev.sh runs it in .venv-debian before the tests it runs there, so the log proves the
tests ran against Debian 12's python3-* packages (what the .deb depends on), not newer pip ones.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import version
from pathlib import Path

DEBIAN_SITE = Path("/usr/lib/python3/dist-packages")

# distribution name -> module imported by kdumpd (and by the tests: pytest, hypothesis, drgn).
MODULES = {
    "numpy": "numpy",
    "zstandard": "zstandard",
    "dbus-fast": "dbus_fast",
    "pyelftools": "elftools",
    "pystemd": "pystemd",
    "python-lzo": "lzo",
    "pytest": "pytest",
    "hypothesis": "hypothesis",
    "drgn": "drgn",
    "libkdumpfile": "kdumpfile",
}


def main() -> int:
    print(f"python {sys.version.split()[0]} ({sys.executable})")
    foreign = []
    for dist, name in MODULES.items():
        path = Path(importlib.import_module(name).__file__ or "?").resolve()
        print(f"  {dist:12} {version(dist):10} {path}")
        if not path.is_relative_to(DEBIAN_SITE):
            foreign.append(f"{name} ({path})")
    if foreign:
        print(f"not Debian's packaged modules: {', '.join(foreign)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
