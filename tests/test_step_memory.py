"""Each step's peak memory is measured without erasing the process's own peak (which /usr/bin/time and
benchmark harnesses read through getrusage)."""

from __future__ import annotations

import os
import resource
import sys
import time

import numpy as np
import pytest

from qcompile.run.memory import StepPeak

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
MiB = 1 << 20


def _resident_kb() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def _until_sampled(peak: StepPeak) -> None:
    """Wait until ``peak``'s sampling thread has seen the memory resident now: it samples every few milliseconds,
    but on a busy or single core it runs when the scheduler lets it, so a fixed sleep could end before it looks."""
    now_kb = _resident_kb() - 1024  # 1 MiB of slack for what other threads free meanwhile
    deadline = time.monotonic() + 60
    while peak._sampled < now_kb:
        assert time.monotonic() < deadline, "the sampling thread never ran"
        time.sleep(0.005)


def test_step_peaks_and_the_process_peak():
    with StepPeak() as big:
        x = np.ones(300 * MiB, np.uint8)  # ones(): the pages are touched, so resident
        _until_sampled(big)  # seen by sampling too, should an earlier test of this process have peaked higher
        del x
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with StepPeak() as small:  # below the first peak: seen by sampling
        y = np.ones(120 * MiB, np.uint8)
        _until_sampled(small)
        del y
    with StepPeak() as idle:
        pass
    assert big.mb >= 300 and small.mb >= 120 and idle.mb is not None
    assert small.mb < big.mb and idle.mb < small.mb
    # The regression this guards: resetting the kernel's high-water mark per step erased the process's peak.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 >= process_peak >= 300
