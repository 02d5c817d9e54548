"""Keep freed memory in the process, so that a training step does not page its buffers in anew.

A step allocates and frees the same few-megabyte buffers every time (a layer's gates for all steps,
their gradients). With glibc's defaults, a block that size is mapped fresh from the kernel and
unmapped when freed, or freed memory at the top of the heap is handed back: either way the next step
touches new pages, and each 4 KiB page costs a fault and a zeroing in the kernel. On an SST-2 step
of the bidirectional GRU that is some 150 faults, 7-9% of the step (see docs/results.md, "Where the
speed comes from"). Two `mallopt` settings stop it: blocks up to 32 MiB (glibc's most) come from the
heap, and up to 1 GiB of free memory stays at its top. Peak memory is unchanged; a process that has
freed memory keeps it until it exits, which suits a command that trains or evaluates and ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on a 64-bit machine
TRIM_THRESHOLD = 1 << 30


@functools.cache
def keep_freed_memory() -> bool:
    """Set the C heap to reuse freed blocks (glibc only; elsewhere nothing changes). True if set."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return False
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mapped = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1  # mallopt returns 1 on success
    trimmed = mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return mapped and trimmed
