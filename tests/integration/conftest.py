"""Session fixtures for integration tests: vmcores the project generates itself (tests/vmcores.py).

The first test that asks for one makes it (qemu under TCG, about 40-90 s each; all of them
3-4 min) and every later session on the machine reuses the cached result. A generation failure
fails the test; it is never a skip.

    def test_x(kexec_vmcore):            # runs once per crash-kernel vmcore (6.1 1G, 6.12 THP)
        kexec_vmcore.vmcore, kexec_vmcore.reference_kdump, kexec_vmcore.dmesg ...
    def test_y(vmcore_qemu): ...         # QEMU dump-guest-memory ELF (+ .makedumpfile_input)
"""

from __future__ import annotations

import pytest
from vmcores import SPECS, GeneratedVmcore, VmcoreGenerationError, ensure

KEXEC_NAMES = [name for name, spec in SPECS.items() if spec.env.get("MODE", "kexec") == "kexec"]


def _get(name: str) -> GeneratedVmcore:
    try:
        return ensure(name)
    except VmcoreGenerationError as e:
        pytest.fail(f"generating vmcore {name}: {e}", pytrace=False)


@pytest.fixture(scope="session", params=KEXEC_NAMES)
def kexec_vmcore(request: pytest.FixtureRequest) -> GeneratedVmcore:
    """Each generated vmcore that a real crash kernel captured (/proc/vmcore copies)."""
    return _get(request.param)


@pytest.fixture(scope="session")
def vmcore_6_1_1g() -> GeneratedVmcore:
    """Debian 12 6.1, 1 GiB guest, a workload unlike the fixture's."""
    return _get("deb12-6.1-1g")


@pytest.fixture(scope="session")
def vmcore_6_12() -> GeneratedVmcore:
    """Debian 13 6.12, 1.5 GiB guest with transparent huge pages."""
    return _get("deb13-6.12-thp")


@pytest.fixture(scope="session")
def vmcore_qemu() -> GeneratedVmcore:
    """QEMU dump-guest-memory ELF of a Debian 12 6.1 guest (no crash)."""
    return _get("deb12-6.1-qemu")
