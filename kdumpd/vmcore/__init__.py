"""Reading a crashed kernel's memory: vmcore inputs, VMCOREINFO, x86_64 translation, classifier.

numpy is imported by nearly every module here, and the OpenBLAS that pip's numpy wheels bundle
starts a thread per CPU at import, each allocating buffers and spinning for a while before it
sleeps: about 60 ms of CPU on two cores, paid in the capture kernel on every dump.  kdumpd never
multiplies matrices, so BLAS gets one thread unless the environment already chose.  This must run
before numpy's first import, hence here (kdumpd.dumpfile imports this package first too).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
