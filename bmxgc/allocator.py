"""The C allocator of a bmxgc process (the CLI's, not an API caller's).

A listing's page arrives as a 400 KB body and is decoded into a 400 KB
string, on each of the listing's threads. glibc's malloc serves blocks that
large with mmap and returns them when freed, but after the first such free it
raises that threshold to the block's size (its "dynamic mmap threshold"), and
from then on keeps them in each thread's arena: a plan of 1,000,000 objects
held about 12 MiB more at its peak. Fixing the threshold at glibc's default
(128 KiB) keeps large buffers out of the arenas. Elsewhere (no glibc) nothing
is changed. Not done for the Python API: the allocator is the host process's.
"""

from __future__ import annotations

import ctypes

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
LARGE = 128 * 1024  # glibc's default threshold


def return_large_buffers() -> bool:
    """Fix glibc's mmap threshold at ``LARGE``; whether it was set."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without it, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE))
