"""CPU runtime settings for the entry points (``run_expid.py``, the benchmarks, the tests).

Call :func:`configure_cpu_runtime` before torch is imported:

* ``OMP_WAIT_POLICY=PASSIVE`` with ``GOMP_SPINCOUNT=1000``: an idle OpenMP thread spins about a thousand times,
  then sleeps. libgomp's default spins 300,000 times; on a shared host that made 2-thread training 3-30x slower
  (each op waited for a descheduled sibling). Not spinning at all makes every parallel region wake a sleeping
  thread: a (256 x 16) @ (16 x 64) matmul took 98 us instead of 8 us, which made small ops (LAIN's layers,
  DIEN's recurrent steps) several times slower. Measured with 2 threads on 2 cores (``benchmarks/`` setup):
  DIN_LAIN at max_len 50 trains in 28.7 / 22.3 / 17.8 / 18.2 ms per step with 0 / 300 / 1,000 / 3,000 spins
  alone, and in 30.5 / 31.1 / 39.0 / 61.9 ms while a second such process shares the cores; DIEN at
  max_len 1000 in 2.04 / 1.72 / 1.50 s alone.
* glibc ``malloc`` keeps freed blocks up to 32 MiB for reuse (fixed mmap threshold, no trimming). By default
  every activation of a few MiB is mmapped and unmapped each step, so each step page-faults its working set
  again: DIN at max_len 1000 trained 1.4x and inferred 2.6x faster on CPU with this setting
  (``benchmarks/benchmark.py``). Memory that was used stays with the process for reuse; the peak is unchanged.

Both are left alone when the user has set them (``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT``,
``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``), and the malloc part is skipped where the C library is
not glibc. Running several multi-threaded jobs on the same cores: give each ``OMP_NUM_THREADS`` of its own share
of the cores, or set ``GOMP_SPINCOUNT=0``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

OPENMP_SPIN_COUNT = 1000                              # see the module docstring for the measurements
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # mallopt parameters, glibc's malloc.h
MMAP_THRESHOLD_BYTES = 32 * 2 ** 20                   # glibc's maximum (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD_BYTES = 2 ** 31 - 1                   # the largest int mallopt takes: never trim


def configure_cpu_runtime() -> bool:
    """Apply the settings above; returns whether the malloc settings were applied."""
    if "torch" not in sys.modules and "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
        os.environ.update(OMP_WAIT_POLICY="PASSIVE", GOMP_SPINCOUNT=str(OPENMP_SPIN_COUNT))
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
