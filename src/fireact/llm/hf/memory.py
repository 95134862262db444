"""glibc memory settings for the hf backend's process on CPU (bench/NOTES.md, peak RSS)."""

from __future__ import annotations

import ctypes
import os

# glibc serves a block below its mmap threshold from its heap and keeps it there once freed, and
# by default that threshold rises to the largest mapped block freed (up to 32 MB): the running
# batch's slot buffers, reallocated as requests come and go, then stay resident after they are
# freed. A fixed threshold maps every block this size or larger apart, so that freeing it gives
# it back (bench/NOTES.md, peak RSS).
MMAP_THRESHOLD_BYTES = 4 * 2**20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter


def map_large_blocks() -> None:
    """Set glibc's mmap threshold to MMAP_THRESHOLD_BYTES for this process, unless the user set
    MALLOC_MMAP_THRESHOLD_; nothing where the C library is not glibc."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is not None:
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_free_memory() -> None:
    """Have glibc give its heaps' free pages back (malloc_trim): the kept histories are blocks
    under the mmap threshold, and once dropped their pages stay resident, so that a process
    running rollout after rollout grew by their size each time (bench/NOTES.md, peak RSS);
    nothing where the C library is not glibc."""
    malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if malloc_trim is not None:
        malloc_trim(0)
