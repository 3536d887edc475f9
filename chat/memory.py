"""Handing freed memory back to the operating system between replies.

glibc's allocator keeps memory that Python and torch have freed for later reuse, in one
arena per thread that ever allocated; a server answering from a pool of worker threads
so holds on to what its largest replies needed (measured on the app under 4 clients:
~110-120 MB resident that `malloc_trim` returns). Trimming after each reply costs a few
milliseconds and keeps the resident size near what is really in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util


def _load_trim():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None)  # glibc only (not macOS, not musl)
    except OSError:
        return None


_MALLOC_TRIM = _load_trim()


def release_freed_memory() -> bool:
    """Return freed heap memory to the OS where the C library can (glibc); True if it did."""
    if _MALLOC_TRIM is None:
        return False
    return bool(_MALLOC_TRIM(0))
