"""crashkernel= grammar and the reservation the kernel makes for it."""

from __future__ import annotations

import pytest

from kdumpd.crashkernel import (
    CrashkernelSpec,
    CrashkernelSyntaxError,
    GiB,
    KiB,
    MiB,
    Range,
    dmesg_line,
    format_size,
    memparse,
    parse_crashkernel,
    reservation,
)

UBUNTU = "2G-4G:320M,4G-32G:512M,32G-64G:1024M,64G-128G:2048M,128G-:4096M"


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("256M", CrashkernelSpec("256M", "simple", size=256 * MiB)),
        ("256M@16M", CrashkernelSpec("256M@16M", "simple", size=256 * MiB, offset=16 * MiB)),
        ("0x10000000", CrashkernelSpec("0x10000000", "simple", size=256 * MiB)),
        ("010M", CrashkernelSpec("010M", "simple", size=8 * MiB)),  # C octal, as memparse
        ("131072k", CrashkernelSpec("131072k", "simple", size=128 * MiB)),
        ("1g", CrashkernelSpec("1g", "simple", size=GiB)),
        (
            "512M-:192M",
            CrashkernelSpec("512M-:192M", "ranges", ranges=(Range(512 * MiB, None, 192 * MiB),)),
        ),
        (
            "1G-2G:128M,2G-:256M@64M",
            CrashkernelSpec(
                "1G-2G:128M,2G-:256M@64M",
                "ranges",
                ranges=(Range(GiB, 2 * GiB, 128 * MiB), Range(2 * GiB, None, 256 * MiB)),
                offset=64 * MiB,
            ),
        ),
        ("1G,high", CrashkernelSpec("1G,high", "high", size=GiB)),
        ("128M,low", CrashkernelSpec("128M,low", "low", size=128 * MiB)),
        ("0,low", CrashkernelSpec("0,low", "low", size=0)),
    ],
)
def test_grammar(text: str, spec: CrashkernelSpec) -> None:
    assert parse_crashkernel(text) == spec


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "memory value expected at 'end of value'"),
        ("auto", "memory value expected at 'auto'"),
        ("256Q", "unrecognized 'Q'"),
        ("256M@", "offset expected"),
        ("256M@16M,", "unrecognized ','"),
        ("0", "size is zero"),
        ("2G-1G:128M", "range end <= start"),
        ("2G:128M", "'-' expected"),
        ("2G-4G128M:1", "':' expected"),
        ("2G-4G:", "memory value expected"),
        ("2G-4G:128M,", "memory value expected"),
        ("2G-4G:128M;4G-:256M", "unrecognized ';4G-:256M'"),
        ("1G,hi", "unrecognized ','"),
        ("x,high", "memory value expected"),
    ],
)
def test_malformed(text: str, error: str) -> None:
    with pytest.raises(CrashkernelSyntaxError, match=error):
        parse_crashkernel(text)


def test_memparse_suffixes() -> None:
    assert memparse("4K") == (4 * KiB, 2)
    assert memparse("3T") == (3 << 40, 2)
    assert memparse("x") == (0, 0)


@pytest.mark.parametrize(
    ("system_ram", "reserved"),
    [
        (3 * GiB - 400 * KiB, 320 * MiB),  # the guide's 3 GB VM
        (2 * GiB - 200 * MiB, 0),  # 1848M rounds up to 1920M: below the first range
        (4 * GiB - 384 * KiB, 512 * MiB),  # a "4 GB" VM: rounds up to 4G, the next tier
        (4 * GiB - 200 * MiB, 320 * MiB),  # 3.8G rounds to 3968M: still below 4G
        (64 * GiB, 2048 * MiB),  # start inclusive, end exclusive
        (3 * 1024 * GiB, 4096 * MiB),  # > 2 TB: open-ended last range
    ],
)
def test_ranges_compare_against_ram_rounded_up_to_128m(system_ram: int, reserved: int) -> None:
    assert reservation([f"crashkernel={UBUNTU}"], system_ram).size == reserved


def test_one_gb_machine_with_ubuntu_tiers_is_rejected_like_the_kernel() -> None:
    # The 32G-64G:1024M entry is checked before any match: 1024M is not below 1G of RAM.
    r = reservation([f"crashkernel={UBUNTU}"], GiB - 2 * MiB)
    assert (r.size, r.error) == (0, "invalid size: 1G is not below the 1G of RAM")
    assert reservation(["crashkernel=2G-:256M"], GiB).size == 0
    assert reservation(["crashkernel=2G-:256M"], GiB).error is None


def test_last_plain_entry_wins_and_high_low_are_fallbacks() -> None:
    tokens = ["ro", "crashkernel=128M", "crashkernel=1G,high", "crashkernel=256M@16M"]
    r = reservation(tokens, 8 * GiB)
    assert (r.param, r.size, r.offset, r.high) == (
        "crashkernel=256M@16M",
        256 * MiB,
        16 * MiB,
        False,
    )
    r = reservation(["crashkernel=1G,high", "crashkernel=64M,low"], 8 * GiB)
    assert (r.size, r.low_size, r.high, r.total) == (GiB, 64 * MiB, True, GiB + 64 * MiB)
    assert r.param == "crashkernel=1G,high crashkernel=64M,low"
    r = reservation(["crashkernel=1G,high"], 8 * GiB)
    assert r.low_size == 256 * MiB  # x86's default low reservation
    assert reservation(["crashkernel=64M,low"], 8 * GiB).size == 0  # ,low alone: ignored
    assert reservation(["quiet"], 8 * GiB) == reservation([], 8 * GiB)
    assert reservation([], GiB).param == ""


def test_dmesg_line_matches_the_guide() -> None:
    assert dmesg_line(0x60000000, 320 * MiB) == (
        "crashkernel reserved: 0x0000000060000000 - 0x0000000074000000 (320 MB)"
    )
    assert [format_size(n) for n in (320 * MiB, 4 * GiB, 1536 * KiB, 1000)] == [
        "320M",
        "4G",
        "1536K",
        "1000",
    ]
