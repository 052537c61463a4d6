"""Open a saved dump with drgn on the host and print what it reads: drgn_check.py DUMP [VMLINUX].

Without debug info, the kernel's own symbol table (kallsyms, located through VMCOREINFO) gives
the addresses of init_uts_ns and linux_banner, whose strings are read from the dump's memory.
With the kernel's debug vmlinux, drgn also walks the crashed thread's stack and the printk
buffer, as a developer would. Exits 1 when drgn cannot read the dump or the facts disagree.
"""

from __future__ import annotations

import sys

import drgn
from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

NEW_UTS_LEN = 65  # struct new_utsname: sysname, nodename, release, ... each 65 bytes


def with_kallsyms(path: str) -> None:
    prog = drgn.Program()
    prog.set_core_dump(path)
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise SystemExit(f"{path}: drgn does not see a Linux kernel core")
    prog.register_symbol_finder("kallsyms", load_vmlinux_kallsyms(prog), enable_index=0)
    uts = prog.symbol("init_uts_ns").address  # struct uts_namespace starts with its new_utsname
    release: str = prog.read(uts + 2 * NEW_UTS_LEN, NEW_UTS_LEN).split(b"\0")[0].decode()
    banner: str = prog.read(prog.symbol("linux_banner").address, 256).split(b"\0")[0].decode()
    print(f"release {release}")
    print(f"banner {banner.strip()}")
    if not banner.startswith(f"Linux version {release} "):
        raise SystemExit("the banner and the release disagree")


def with_debug_info(path: str, vmlinux: str) -> None:
    from drgn.helpers.linux.printk import get_printk_records

    prog = drgn.Program()
    prog.set_core_dump(path)
    prog.load_debug_info([vmlinux])
    trace = prog.crashed_thread().stack_trace()
    frames = [trace[i].name for i in range(min(len(trace), 6))]
    print(f"crashed thread stack {frames}")
    panic = [
        r.text.decode(errors="replace") for r in get_printk_records(prog) if b"panic" in r.text
    ]
    print(f"printk panic lines {panic[-2:]}")
    if "sysrq_handle_crash" not in frames:
        raise SystemExit("the crashed thread is not in sysrq_handle_crash")


if __name__ == "__main__":
    with_kallsyms(sys.argv[1])
    if len(sys.argv) > 2:
        with_debug_info(sys.argv[1], sys.argv[2])
