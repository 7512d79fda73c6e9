"""Make glibc keep freed memory for reuse, so large feature maps do not cost page faults.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh
``mmap`` and returns it with ``munmap`` when freed; the next tile then pays for the
kernel zeroing those pages again. DeepMedic's feature maps for a 51³+ tile exceed
that size, and on the 2-core CPU this cost 25–40% of the CPU time of a forward pass
(benchmarks/bench_deepmedic.py, tile 48 and 66). Raising the thresholds with
``mallopt`` (what jemalloc/tcmalloc, recommended by PyTorch for CPU inference, do
by design) keeps the memory in the process for the next tile. Only the process that
predicts is affected, it keeps its peak memory until it ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Raise glibc's mmap and trim thresholds (once per process).

    Args:
        threshold: Allocations up to this size come from the heap and are reused.

    Returns:
        True if glibc accepted the settings (False elsewhere, e.g. macOS, musl).
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_THRESHOLD, int(threshold)) == 1
        ok = ok and libc.mallopt(M_TRIM_THRESHOLD, 2 * int(threshold)) == 1
    except (OSError, AttributeError):
        return False
    _done = ok
    return ok
