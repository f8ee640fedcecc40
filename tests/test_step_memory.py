"""Each step's peak memory is measured without erasing the process's own peak (which /usr/bin/time and
benchmark harnesses read through getrusage)."""

from __future__ import annotations

import resource
import sys
import time

import numpy as np
import pytest

from qcompile.run.memory import StepPeak

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
MiB = 1 << 20


def test_step_peaks_and_the_process_peak():
    with StepPeak() as big:
        x = np.ones(300 * MiB, np.uint8)  # ones(): the pages are touched, so resident
        del x
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with StepPeak() as small:  # below the first peak: seen by sampling
        y = np.ones(120 * MiB, np.uint8)
        time.sleep(0.05)
        del y
    with StepPeak() as idle:
        pass
    assert big.mb >= 300 and small.mb >= 120 and idle.mb is not None
    assert small.mb < big.mb and idle.mb < small.mb
    # The regression this guards: resetting the kernel's high-water mark per step erased the process's peak.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 >= process_peak >= 300
