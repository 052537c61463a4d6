"""Placeholder entry point replaced by the D-Bus service work (issue 4)."""

import sys


def main() -> int:
    print("kdumpd: not built yet", file=sys.stderr)
    return 1
