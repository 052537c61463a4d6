"""Writing dumps: page selection, the copy pipeline, kdump-compressed/flattened/ELF writers."""

import kdumpd.vmcore  # noqa: F401  (sets numpy's BLAS threads before numpy's first import)
