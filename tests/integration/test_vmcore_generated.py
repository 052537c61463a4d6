"""The classifier on vmcores the project generates (tests/vmcores.py), against makedumpfile.

Debian 12 kernels must match Debian's makedumpfile 1.7.2 bit for bit (a crash-kernel capture
and a QEMU dump-guest-memory ELF, read as QEMU wrote it). On Debian 13's 6.12, 1.7.2 is known
to be wrong and we follow 1.7.9 instead; the test proves that every difference from 1.7.2 is one
of its two known faults: it keeps the tail pages of transparent huge pages (it cannot find their
order) and drops slab pages as user data (a slab's odd mapping word looks anonymous to it).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest
from vmcores import GeneratedVmcore

from kdumpd.vmcore.classify import Classifier, classifier
from kdumpd.vmcore.elf import ElfVmcore
from kdumpd.vmcore.stats import dry_run_counts

pytestmark = pytest.mark.vmcore
LABELS = {
    "zero": "Pages filled with zero",
    "cache": "Non-private cache pages",
    "cache_private": "Private cache pages",
    "user": "User process data pages",
    "free": "Free pages",
}


@pytest.fixture(scope="module")
def pfn_ranges(shared_fixtures: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("pfn_ranges", shared_fixtures / "pfn-ranges.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_bitmap(tools: ModuleType, gen: GeneratedVmcore, which: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(tools.kdump_bitmap(str(gen.reference_kdump), which), dtype=np.uint8)


def reference_counts(gen: GeneratedVmcore) -> dict[str, int]:
    text = gen.show_stats.read_text()
    found = {k: re.search(rf"{label}\s*: (0x[0-9a-f]+)", text) for k, label in LABELS.items()}
    return {k: int(m.group(1), 16) for k, m in found.items() if m}


def bits(bitmap: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    return np.unpackbits(bitmap, bitorder="little")


@pytest.mark.parametrize("name", ["vmcore_6_1_1g", "vmcore_qemu"])
def test_debian12_identical_to_makedumpfile(
    request: pytest.FixtureRequest, pfn_ranges: ModuleType, name: str
) -> None:
    gen: GeneratedVmcore = request.getfixturevalue(name)
    with ElfVmcore(gen.vmcore) as vm:
        bitmap1, bitmap2 = classifier(vm, 31).bitmaps()
        assert np.array_equal(bitmap1, reference_bitmap(pfn_ranges, gen, 1))
        assert np.array_equal(bitmap2, reference_bitmap(pfn_ranges, gen, 2))
        counts = dry_run_counts(classifier(vm, 31)).as_dict()
    assert {k: counts[k] for k in LABELS} == reference_counts(gen)


def struct_page(cls: Classifier, pfn: int) -> bytes:
    assert cls.model is not None and cls.translator is not None
    size = cls.model.page_struct_size
    for r in cls.model.ranges:
        if r.start_pfn <= pfn < r.end_pfn:
            return cls.translator.read_virt(r.mem_map + (pfn - r.start_pfn) * size, size)
    raise AssertionError(f"pfn {pfn:#x} has no struct page")


def test_debian13_differs_from_1_7_2_only_where_1_7_2_is_wrong(
    vmcore_6_12: GeneratedVmcore, pfn_ranges: ModuleType
) -> None:
    with ElfVmcore(vmcore_6_12.vmcore) as vm:
        info = vm.vmcoreinfo
        assert info is not None and info.osrelease.startswith("6.12.")
        cls = classifier(vm, 31)
        bitmap1, bitmap2 = cls.bitmaps()
        assert cls.warnings == []
        ours, theirs = bits(bitmap2), bits(reference_bitmap(pfn_ranges, vmcore_6_12, 2))
        assert np.array_equal(bitmap1, reference_bitmap(pfn_ranges, vmcore_6_12, 1))
        only_we_drop = np.flatnonzero(theirs & ~ours).tolist()
        only_we_keep = np.flatnonzero(ours & ~theirs).tolist()
        slab_type = (info.require("NUMBER", "PAGE_SLAB_MAPCOUNT_VALUE", "test")) & 0xFFFFFFFF
        mapcount_at = info.require("OFFSET", "page._mapcount", "test")
        head_at = info.require("OFFSET", "page.compound_head", "test")
        tails = 0
        for pfn in only_we_drop:
            head = int.from_bytes(struct_page(cls, pfn)[head_at : head_at + 8], "little")
            tails += head & 1
        for pfn in only_we_keep:
            page = struct_page(cls, pfn)
            assert int.from_bytes(page[mapcount_at : mapcount_at + 4], "little") == slab_type
        counts = dry_run_counts(classifier(vm, 31)).as_dict()
    # The workload holds 256 MiB of anonymous memory, most of it in THPs.
    assert tails == len(only_we_drop) > 32768
    ref = reference_counts(vmcore_6_12)
    assert {k: counts[k] for k in ("cache", "cache_private", "free")} == {
        k: ref[k] for k in ("cache", "cache_private", "free")
    }
    assert counts["user"] == ref["user"] - len(only_we_keep) + len(only_we_drop)
