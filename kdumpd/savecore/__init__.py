"""The capture kernel's job: save dmesg and the dump of /proc/vmcore to the configured targets.

``run`` orchestrates (per target: stamp directory, metadata, dmesg, dump, commit, retention);
``layout`` names and commits files and documents the metadata schema; ``space`` decides the byte
budget and retention; ``targets``, ``ssh`` and ``nfs`` are where the bytes go; ``engine`` adapts
kdumpd.vmcore and kdumpd.dumpfile; ``after`` runs KDUMP_FAIL_CMD or reboots; ``generator`` orders
kdump-tools-dump.service after what the targets need.  The CLI is kdumpd.cli.savecore.
"""
