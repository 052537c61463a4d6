"""Open a saved dump with drgn on the host and print what it reads: drgn_check.py DUMP.

No debug info is needed: the kernel's own symbol table (kallsyms, located through VMCOREINFO)
gives the addresses of init_uts_ns and linux_banner, whose strings are read from the dump's
memory. Prints ``release <R>`` and ``banner <B>``; exits 1 when drgn cannot open or read the dump
or the two disagree.
"""

from __future__ import annotations

import sys

import drgn
from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

NEW_UTS_LEN = 65  # struct new_utsname: sysname, nodename, release, ... each 65 bytes


def main(path: str) -> int:
    prog = drgn.Program()
    prog.set_core_dump(path)
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        print(f"{path}: drgn does not see a Linux kernel core")
        return 1
    prog.register_symbol_finder("kallsyms", load_vmlinux_kallsyms(prog), enable_index=0)
    uts = prog.symbol("init_uts_ns").address  # struct uts_namespace starts with its new_utsname
    release = prog.read(uts + 2 * NEW_UTS_LEN, NEW_UTS_LEN).split(b"\0")[0].decode()
    print(f"release {release}")
    banner = prog.read(prog.symbol("linux_banner").address, 256).split(b"\0")[0].decode()
    print(f"banner {banner.strip()}")
    return 0 if banner.startswith(f"Linux version {release} ") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
