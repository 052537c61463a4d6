"""The page classifier against Debian makedumpfile 1.7.2's results on the fixture vmcore."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard

from kdumpd.vmcore.classify import classifier
from kdumpd.vmcore.elf import ElfVmcore
from kdumpd.vmcore.stats import dry_run_counts, original_pages

pytestmark = pytest.mark.vmcore


def zst(path: Path) -> bytes:
    with path.open("rb") as f:
        return zstandard.ZstdDecompressor().stream_reader(f).read()


@pytest.fixture(scope="module")
def vmcore(fixture_vmcore: Path) -> ElfVmcore:
    return ElfVmcore(fixture_vmcore)


@pytest.mark.parametrize("level", [2, 4, 8, 16, 31])
def test_bitmaps_identical_to_makedumpfile(
    vmcore: ElfVmcore, shared_fixtures: Path, level: int
) -> None:
    bitmap1, bitmap2 = classifier(vmcore, level).bitmaps()
    ref1 = zst(shared_fixtures / "vmcore-6.1-kexec.bitmap1.zst")
    ref2 = zst(shared_fixtures / f"vmcore-6.1-kexec.d{level}.bitmap2.zst")
    assert len(bitmap2) == (163802 + 7) // 8
    assert bitmap1.tobytes() == ref1[: len(bitmap1)]
    assert bitmap2.tobytes() == ref2[: len(bitmap2)]


def test_counts_of_all_32_levels_equal_show_stats(vmcore: ElfVmcore, shared_fixtures: Path) -> None:
    reference = json.loads((shared_fixtures / "vmcore-6.1-kexec.pages.json").read_text())["levels"]
    for level in range(32):
        cls = classifier(vmcore, level)
        counts = dry_run_counts(cls).as_dict()
        want = reference[str(level)]
        assert cls.warnings == []
        assert counts == {name: want[name] for name in counts}, f"-d {level}"
        original = original_pages(vmcore, cls)
        assert (original, cls.max_mapnr - original) == (want["original"], want["memory_hole"])
        assert original - sum(counts.values()) == want["remaining"]


def test_chunk_size_does_not_change_the_decision(vmcore: ElfVmcore) -> None:
    whole = classifier(vmcore, 31).bitmaps()[1]
    small = classifier(vmcore, 31, chunk_pages=512).bitmaps()[1]
    assert np.array_equal(whole, small)


def test_classifier_memory_is_bounded(fixture_vmcore: Path) -> None:
    """A whole level-31 pass adds a few MiB to the interpreter with numpy, whatever the input
    size: struct pages are read a chunk at a time and the bitmaps are packed."""
    script = (
        "import resource, sys, numpy\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "from kdumpd.vmcore.elf import ElfVmcore\n"
        "from kdumpd.vmcore.classify import classifier\n"
        "from kdumpd.vmcore.stats import dry_run_counts\n"
        "dry_run_counts(classifier(ElfVmcore(sys.argv[1]), 31))\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(fixture_vmcore)],
        check=True,
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    growth_kib = int(out.stdout.split()[-1])
    assert growth_kib < 12 * 1024, f"classifier pass grew RSS by {growth_kib} KiB"
