"""Freed memory kept for reuse in LightSeg's own processes (glibc's malloc; elsewhere nothing changes).

By default glibc hands large freed blocks back to the operating system at once and grows the heap again on the next
allocation, so every batch of slices pays for the kernel mapping and zeroing its buffers anew. A fresh ``lightseg
segment`` of P001 took about 390,000 page faults; with freed memory kept for reuse, about 140,000, and 0.5-1 s less
of its 4-6 s on the 2-core CPU, at the same peak memory (``benchmarks/RESULTS.md``, "Speed"). It is set where the
process is LightSeg's: the command line and the batch workers, not inside 3D Slicer.
"""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # blocks up to this come from the heap; glibc's ceiling on 64-bit systems
TRIM_THRESHOLD_BYTES = 2**31 - 1  # free memory at the heap's top is kept up to this (mallopt takes a C int)


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to serve blocks up to 32 MB from the heap and to keep what is freed; True where it did."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # another C library (musl)
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                                    TRIM_THRESHOLD_BYTES))
