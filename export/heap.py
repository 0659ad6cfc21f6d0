"""The catalog build's heap: large blocks go back to the system when freed.

glibc serves a request of 128 KiB or more with its own mmap, and returns it on free; but each time such a
block is freed it raises that threshold to the block's size (up to 32 MiB), so that afterwards the build's
many short-lived arrays (a chunk of vectors, a batch of results, a column being sorted) are carved from
the heap, and what the heap keeps after they are freed only grows. Fixing the threshold keeps them mapped
and returned. Measured on whole `export --base --rebase --engine ray` builds of 10 000 and 40 000 images
(the driver's RssAnon peak, sampled as bench/driver_phases.py does, on bench/update.py's generated
catalogs on tests/data/tiny-bundle, 2026-12-05): 1.19 and 1.31 KB more per image without it, 0.96 and 1.20 with
the threshold fixed from the environment (MALLOC_MMAP_THRESHOLD_), 1.05 with this call. Not glibc (musl,
macOS): nothing to do.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's own default, kept fixed


def return_large_blocks() -> bool:
    """Fix glibc's mmap threshold for the rest of this process; False where there is no glibc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        mallopt = getattr(ctypes.CDLL(name), "mallopt", None)
    except OSError:
        return False
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
