"""Peak memory of each step, without touching the process's own peak (Linux only).

The kernel's high-water mark (``VmHWM``) could be reset before each step (``/proc/self/clear_refs``), but that
also erases the process's peak that ``/usr/bin/time``, ``getrusage`` and job schedulers report: a build would look
smaller than it was. So the mark is only read: a step that raises it gets it exactly; a step that stays below an
earlier step's peak gets the largest resident size a sampling thread saw every few milliseconds (a spike shorter
than that can go unseen there, never in the build's own peak).
"""

from __future__ import annotations

import functools
import os
import re
import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")
_STATM = "/proc/self/statm"
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
SAMPLE_SECONDS = 0.005


def _hwm_kb() -> int | None:
    try:
        m = re.search(r"VmHWM:\s+(\d+) kB", _STATUS.read_text())
    except OSError:
        return None
    return int(m.group(1)) if m else None


class StepPeak:
    """``with StepPeak() as peak: ...`` then ``peak.mb``: the block's peak resident memory in MiB, or None
    where the OS does not say."""

    def __init__(self) -> None:
        self.mb: float | None = None
        self._before: int | None = None
        self._sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StepPeak:
        self._before = _hwm_kb()
        if self._before is not None:
            self._thread = threading.Thread(target=self._sample, name="qcompile-peak", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        with open(_STATM, "rb", buffering=0) as f:
            while True:
                f.seek(0)
                self._sampled = max(self._sampled, int(f.read().split()[1]) * _PAGE // 1024)
                if self._stop.wait(SAMPLE_SECONDS):
                    return

    def __exit__(self, *exc) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        after = _hwm_kb()
        if after is None:
            return
        kb = after if after > self._before else self._sampled
        self.mb = round(kb / 1024, 1)


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
