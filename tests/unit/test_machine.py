"""Parsers of the machine snapshot, and reading a fake machine through --root."""

from __future__ import annotations

from pathlib import Path

from kdumpd.machine import (
    efivar_bool,
    parse_cpu_list,
    parse_iomem,
    parse_lockdown,
    parse_meminfo,
    read_system_state,
)
from kdumpd.system import SystemRoot
from tests.unit.machines import RELEASE, GiB, MiB, build_machine


def test_parsers() -> None:
    entries = parse_iomem("00001000-0009ffff : System RAM\n  01000000-01ffffff : Kernel code\n")
    assert [(e.start, e.size, e.name, e.depth) for e in entries] == [
        (0x1000, 0x9F000, "System RAM", 0),
        (0x1000000, 16 * MiB, "Kernel code", 1),
    ]
    # What a non-root reader sees: addresses hidden, so no map at all rather than zeros.
    assert parse_iomem("00000000-00000000 : System RAM\n  00000000-00000000 : Crash kernel\n") == []
    assert parse_cpu_list("0-3,8-11,15\n") == 9
    assert parse_lockdown("none [integrity] confidentiality\n") == "integrity"
    assert parse_meminfo("MemTotal: 100 kB\nHugePages_Total: 4\nbogus\n") == {
        "MemTotal": 100,
        "HugePages_Total": 4,
    }
    assert efivar_bool(b"\x06\0\0\0\x01") is True
    assert efivar_bool(b"\x06\0\0\0\x00") is False
    assert efivar_bool(b"\x06") is None


def test_read_fake_machine(tmp_path: Path) -> None:
    build_machine(tmp_path, secure_boot=True, swap=2 * GiB)
    (tmp_path / "var/crash/kexec_cmd").write_text("/sbin/kexec -p x\n")
    s = read_system_state(SystemRoot(tmp_path), "/var/crash", lambda _: 5 * GiB)
    assert (s.kernel_release, s.arch, s.cpus, s.sysrq) == (RELEASE, "x86_64", 4, 176)
    assert -(-s.system_ram // (128 * MiB)) * 128 * MiB == 3 * GiB
    assert (s.crash_reserved, [e.start for e in s.crash_regions]) == (320 * MiB, [0x60000000])
    assert (s.kexec_crash_loaded, s.fadump_enabled, s.fadump_registered) == (True, False, None)
    assert (s.efi, s.secure_boot, s.setup_mode, s.kexec_file_required) == (True, True, False, True)
    assert s.boot_kernels == (RELEASE,)
    assert s.kernel_link == f"/boot/vmlinuz-{RELEASE}"
    assert (s.coredir_free, s.coredir_writable, s.kexec_cmd) == (5 * GiB, True, "/sbin/kexec -p x")
    assert s.swap == 2 * GiB
