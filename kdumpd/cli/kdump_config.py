"""Placeholder entry point replaced by the foundation work (issue 2)."""

import sys


def main() -> int:
    print("kdump-config: not built yet", file=sys.stderr)
    return 1
