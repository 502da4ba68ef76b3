"""CPU runtime settings for the entry points (``run_expid.py``, the benchmarks, the tests).

Call :func:`configure_cpu_runtime` before torch is imported:

* ``OMP_WAIT_POLICY=PASSIVE``: idle OpenMP threads sleep instead of spinning. On a shared host, spinning
  threads made 2-thread training 3-30x slower (each op waited for a descheduled sibling).
* glibc ``malloc`` keeps freed blocks up to 32 MiB for reuse (fixed mmap threshold, no trimming). By default
  every activation of a few MiB is mmapped and unmapped each step, so each step page-faults its working set
  again: DIN at max_len 1000 trained 1.4x and inferred 2.6x faster on CPU with this setting
  (``benchmarks/benchmark.py``). Memory that was used stays with the process for reuse; the peak is unchanged.

Both are left alone when the user has set them (``OMP_WAIT_POLICY``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``), and the malloc part is skipped where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # mallopt parameters, glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 * 2 ** 20                   # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD_BYTES = 2 ** 31 - 1                   # the largest int mallopt takes: never trim


def configure_cpu_runtime() -> bool:
    """Apply the settings above; returns whether the malloc settings were applied."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
