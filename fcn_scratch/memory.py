"""Freed memory kept for the next step instead of handed back to the operating system.

A training step allocates and frees the same large arrays (im2col columns, activations,
gradients) every time. glibc's malloc hands every block above its ``mmap`` threshold back
to the kernel when freed, so the next step's identical block costs fresh pages: a page
fault and the zeroing of every page, about 15% of a step of the default model. Raising the
threshold (to its maximum, 32 MiB) and the trim threshold keeps such blocks in the heap,
where the next step finds them. Elsewhere than glibc this does nothing.
"""

import ctypes
import ctypes.util
from functools import cache

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper limit on 64-bit systems


@cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks up to 32 MiB for reuse (once per process).

    Returns whether the setting took (False where malloc is not glibc's)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) and mallopt(_M_TRIM_THRESHOLD, 2**30)
    )
