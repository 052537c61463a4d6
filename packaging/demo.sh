#!/usr/bin/env bash
# Repeat the full-system demo on this machine (Debian 12, as root, about 10 minutes on 2 cores,
# more the first time: it downloads a Debian 12 root filesystem of about 800 MB into
# /var/tmp/kdumpd-test-cache/system/):
#   bash packaging/demo.sh
# It builds kdumpd_*.deb from this tree, boots Debian 12 under qemu (software emulation) with
# crashkernel=192M, installs the package there with apt, checks kdump-config show, the bus API
# and polkit, crashes the guest with sysrq-c, lets the capture kernel save the dump and reboot,
# finds the dump through the daemon and opens it with drgn on this machine. It prints each
# phase with its time beside kdump-tools' and keeps the console log (path on the last line).
# KDUMPD_DEB=path/to/kdumpd_*.deb uses a package built elsewhere instead.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
bash scripts/dev.sh setup
exec nice .venv/bin/python -m tests.system.fullsystem --keep "$@"
