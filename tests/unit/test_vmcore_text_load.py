"""kernel_text_load: the PT_LOAD that phys_base is derived from when VMCOREINFO lacks it."""

from __future__ import annotations

from pathlib import Path

from kdumpd.vmcore.elf import ElfVmcore, kernel_text_load
from tests.unit.vmcore_synth import Seg, build

PAGE = 4096


def open_vmcore(tmp_path: Path, segs: list[Seg]) -> ElfVmcore:
    path = tmp_path / "vmcore"
    path.write_bytes(build(segs))
    return ElfVmcore(path)


def test_first_segment_in_the_kernel_image_map(tmp_path: Path) -> None:
    # The direct map comes first here, and a second kernel-map segment must not win.
    ram = Seg(0x1000, 8 * PAGE, vaddr=0xFFFF888000001000)
    text = Seg(0x4000, 2 * PAGE, vaddr=0xFFFFFFFF81000000)
    modules = Seg(0x7000, PAGE, vaddr=0xFFFFFFFFC0000000)
    with open_vmcore(tmp_path, [ram, text, modules]) as vm:
        assert kernel_text_load(vm) == (0xFFFFFFFF81000000, 0x4000)


def test_none_without_a_kernel_map_segment(tmp_path: Path) -> None:
    with open_vmcore(tmp_path, [Seg(0x1000, 8 * PAGE, vaddr=0xFFFF888000001000)]) as vm:
        assert kernel_text_load(vm) is None


def test_none_for_inputs_that_are_not_elf(tmp_path: Path) -> None:
    # Only an ELF vmcore has program headers: something else with a .loads list is ignored.
    class NotElf:
        loads = (Seg(0x4000, PAGE, vaddr=0xFFFFFFFF81000000),)

    assert kernel_text_load(NotElf()) is None  # type: ignore[arg-type]
