#!/usr/bin/env bash
# Set up a development/test environment for kdumpd on Debian 12 (as root) and run something in it.
#   bash scripts/dev.sh run     set up, then print this machine's kdump readiness (kdump-config show)
#   bash scripts/dev.sh test    set up, then run every check and test (what .ci/run calls)
#   bash scripts/dev.sh setup   set up only
# Set-up is idempotent: apt packages from scripts/apt-packages.txt, a venv in .venv built on
# Debian's python3 (system site packages, so Debian's python3-libkdumpfile is importable), and
# the project installed editable with its dev extras. `test` then runs the tests a second time in
# .venv-debian: Debian's python3 with only Debian 12's python3-* packages (the versions the .deb
# depends on) and the project installed editable without dependencies.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
venv="$here/.venv"
debian_venv="$here/.venv-debian"

setup() {
    local missing
    missing=$(grep -v '^#' scripts/apt-packages.txt | while read -r pkg; do
        [ -n "$pkg" ] || continue
        dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed' || echo "$pkg"
    done)
    if [ -n "$missing" ]; then
        echo "dev.sh: installing Debian packages: $(echo $missing | tr '\n' ' ')" >&2
        # kexec-tools must not take over this machine's reboots.
        echo 'kexec-tools kexec-tools/load_kexec boolean false' | debconf-set-selections
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    fi
    if [ ! -x "$venv/bin/python" ]; then
        /usr/bin/python3 -m venv --system-site-packages "$venv"
    fi
    local stamp="$venv/.installed-$(cat pyproject.toml scripts/apt-packages.txt | sha256sum | cut -c1-16)"
    if [ ! -e "$stamp" ]; then
        "$venv/bin/python" -m pip install -q --upgrade pip
        # Eager: Debian's python3-* packages (for .venv-debian) already satisfy the lower bounds,
        # and this venv is meant to run on the newest releases.
        "$venv/bin/python" -m pip install -q --upgrade --upgrade-strategy eager -e ".[dev]"
        rm -f "$venv"/.installed-*
        touch "$stamp"
    fi
    setup_debian
}

setup_debian() {
    if [ ! -x "$debian_venv/bin/python" ]; then
        /usr/bin/python3 -m venv --system-site-packages "$debian_venv"
    fi
    local stamp="$debian_venv/.installed-$(sha256sum <pyproject.toml | cut -c1-16)"
    if [ ! -e "$stamp" ]; then
        # No index and no build isolation: nothing may come from PyPI, not even setuptools.
        "$debian_venv/bin/python" -m pip install -q --no-deps --no-build-isolation --no-index -e .
        rm -f "$debian_venv"/.installed-*
        touch "$stamp"
    fi
}

# Run a command; the first failure's exit code becomes $status, and the next commands still run.
try_run() {
    "$@" || { local rc=$?; [ "$status" -ne 0 ] || status=$rc; }
}

checks() {
    "$venv/bin/ruff" check kdumpd tests bench
    "$venv/bin/ruff" format --check kdumpd tests bench
    "$venv/bin/mypy"
}

case "${1:-}" in
    setup) setup ;;
    run) setup; shift; exec "$venv/bin/kdump-config" show "$@" ;;
    test)
        setup
        checks
        shift
        status=0
        try_run "$venv/bin/python" -m pytest "$@"
        # vm and system tests boot the same code under qemu: the first run covers them.
        echo "dev.sh: the tests again on Debian 12's packaged modules (.venv-debian)" >&2
        try_run "$debian_venv/bin/python" scripts/debian_versions.py
        try_run "$debian_venv/bin/python" -m pytest -p no:cacheprovider -m "not vm and not system" "$@"
        exit "$status"
        ;;
    *) echo "usage: bash scripts/dev.sh run|test|setup" >&2; exit 2 ;;
esac
