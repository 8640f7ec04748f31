"""Keep freed memory for reuse instead of handing it back to the kernel (glibc malloc).

Feature extraction, training and scoring allocate and free arrays of megabytes over and over. By
default glibc serves such blocks with fresh ``mmap`` pages and returns them to the kernel on ``free``,
so every new array pays one page fault per 4 KiB page: on this project's 2-core virtual machine that
made F0 extraction ~1.7x slower and LCNN scoring ~1.4x slower (measured in bench/). jemalloc and
tcmalloc, which PyTorch's CPU tuning guides recommend, avoid it by keeping freed memory; glibc does
the same once ``M_MMAP_THRESHOLD`` and ``M_TRIM_THRESHOLD`` are raised, set here with ``mallopt``.
The cost: the process keeps its peak heap until it exits. Not glibc (macOS, Windows, musl): no-op.
A user who sets ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``, or preloads another
allocator (``LD_PRELOAD``), keeps their choice.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # bytes: no array this code allocates is larger
_done = False


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if this call changed them."""
    global _done
    if _done or not sys.platform.startswith("linux"):
        return False
    _done = True
    user_choice = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "LD_PRELOAD")
    if any(os.environ.get(name) for name in user_choice):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, _THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _THRESHOLD))
