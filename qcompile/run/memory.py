"""Peak memory of each step: the process's high-water mark, reset before the step runs (Linux only).

Steps run one after another in the build's process, so the process's peak RSS is the largest step's; resetting
the mark (``/proc/self/clear_refs``, Linux >= 4.0) before each step gives every step its own peak.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR = Path("/proc/self/clear_refs")


def reset_peak() -> bool:
    """Start a new high-water mark; False where the OS offers none."""
    try:
        _CLEAR.write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float | None:
    """The process's peak resident memory since the last reset, in MiB (None where unknown)."""
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return round(int(m.group(1)) / 1024, 1) if m else None


def release_free_memory() -> None:
    """Hand memory a finished step freed back to the OS (glibc keeps freed heap pages otherwise, so every later
    step, and the build's peak, would carry the largest step's memory). A no-op off glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, looked up once (``find_library`` runs ``ldconfig``), or None."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
