"""Placeholder entry point replaced by the capture engine work (issue 3)."""

import sys


def main() -> int:
    print("kdumpd-capture: not built yet", file=sys.stderr)
    return 1
