#!/usr/bin/env bash
# Build the kdumpd Debian package from this source tree:
#   bash packaging/build-deb.sh [OUTDIR]      (default OUTDIR: ./dist)
# Copies the sources into a temporary build directory with packaging/debian/ as
# its debian/, runs dpkg-buildpackage -us -uc -b there and moves the .deb (and
# the .buildinfo/.changes) into OUTDIR. Prints the .deb's path on the last line.
# Needs Debian 12 with debhelper, dh-python and pybuild-plugin-pyproject.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$src/dist}" && cd "${1:-$src/dist}" && pwd)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kdumpd-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

version=$(dpkg-parsechangelog -l "$src/packaging/debian/changelog" -S Version)
build="$tmp/kdumpd-$version"
mkdir "$build"
# Only what the package is built from: no venv, caches, tests or git metadata.
tar -C "$src" --exclude=__pycache__ --exclude='*.egg-info' --exclude=packaging/debian \
	-cf - pyproject.toml README.md kdumpd units dbus packaging | tar -C "$build" -xf -
cp -a "$src/packaging/debian" "$build/debian"

# Debian's own python3 and tools, not whatever interpreter comes first in PATH.
if ! (cd "$build" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b >"$tmp/build.log" 2>&1); then
	tail -n 40 "$tmp/build.log" >&2
	echo "build-deb: dpkg-buildpackage failed (log above)" >&2
	exit 1
fi
deb=$(cd "$tmp" && ls kdumpd_*.deb)
mv "$tmp/$deb" "$tmp"/kdumpd_*.buildinfo "$tmp"/kdumpd_*.changes "$out/"
echo "$out/$deb"
