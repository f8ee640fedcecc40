"""How busy the machine was while something was timed, and waiting for it to be quiet.

Two signals, both read from the OS without a library: the 1-minute load average (any Unix), and on Linux the CPU
pressure stall information (``/proc/pressure/cpu``), whose ``some`` counter is the time during which at least one
runnable task waited for a CPU. The load average is smoothed over a minute, so it lags a process that started a few
seconds ago; the pressure counter, read before and after, covers exactly the window measured.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

PSI_CPU = Path("/proc/pressure/cpu")
# Share of a measurement's wall time during which some task waited for a CPU, above which the machine counts as
# busy. A quiet 2-core machine timing ONNX Runtime on both cores reads under 5%; one CPU-bound process beside it
# reads 40-100%.
BUSY_PRESSURE = 0.25
# ... and for at least this long: a 70 ms window on a quiet machine once read 35% (25 ms, as little as one other
# thread waking up), so short windows are judged by the stall they add up to.
MIN_STALL_SECONDS = 0.1


def cores_available() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_1min() -> float | None:
    """The 1-minute load average, None where the OS has none (Windows)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _stall_us() -> int | None:
    """The ``some`` total of the CPU pressure file (microseconds), None where there is none."""
    try:
        for line in PSI_CPU.read_text().splitlines():
            if line.startswith("some "):
                return int(dict(f.split("=") for f in line.split()[1:])["total"])
    except (OSError, ValueError, KeyError):
        return None
    return None


class LoadProbe:
    """Records the load around a measurement: ``sample()`` between timed blocks, ``summary()`` at the end."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self._clock = clock
        self.cores = cores_available()
        self.before = load_1min()
        self._loads = [self.before] if self.before is not None else []
        self._t0, self._stall0 = clock(), _stall_us()

    def sample(self) -> None:
        """Note the load average now (cheap: one system call)."""
        load = load_1min()
        if load is not None:
            self._loads.append(load)

    def summary(self) -> dict[str, Any]:
        """``loadavg_before``, ``loadavg_max`` (over the samples), ``loadavg_after``, ``cpu_pressure`` (share of
        the window some task waited for a CPU; None without PSI) and ``cpu_stall_s`` (that time in seconds),
        ``cores`` and ``busy`` (a reason, or None)."""
        after = load_1min()
        if after is not None:
            self._loads.append(after)
        stall, wall = _stall_us(), self._clock() - self._t0
        pressure = stalled = None
        if stall is not None and self._stall0 is not None and wall > 0:
            stalled = (stall - self._stall0) / 1e6
            pressure = round(min(1.0, stalled / wall), 3)
            stalled = round(stalled, 3)
        out = {"loadavg_before": self.before, "loadavg_max": max(self._loads) if self._loads else None,
               "loadavg_after": after, "cpu_pressure": pressure, "cpu_stall_s": stalled, "cores": self.cores}
        out["busy"] = busy_reason(out)
        return out


def busy_reason(load: dict[str, Any]) -> str | None:
    """Why a measurement counts as taken on a busy machine (its load average above the cores it could use, or
    CPU pressure at or above ``BUSY_PRESSURE`` adding up to ``MIN_STALL_SECONDS``), or None when neither holds."""
    reasons = []
    peak, cores = load.get("loadavg_max"), load.get("cores") or 1
    if peak is not None and peak > cores:
        reasons.append(f"1-minute load average up to {peak:.2f} on {cores} cores")
    pressure, stalled = load.get("cpu_pressure"), load.get("cpu_stall_s") or 0.0
    if pressure is not None and pressure >= BUSY_PRESSURE and stalled >= MIN_STALL_SECONDS:
        reasons.append(f"a task waited for a CPU {pressure * 100:.0f}% of the time")
    return "; ".join(reasons) or None


def wait_for_quiet(below: float, timeout_s: float, on_wait: Callable[[float, float], None] | None = None,
                   read_load: Callable[[], float | None] = load_1min, sleep: Callable[[float], None] = time.sleep,
                   clock: Callable[[], float] = time.monotonic, poll_s: float = 5.0) -> tuple[bool, float | None]:
    """Wait until the 1-minute load average is below ``below``, at most ``timeout_s`` seconds.

    Returns (quiet, last load read). ``on_wait(load, seconds left)`` is called before each pause, so a caller can
    say what it waits for. Without a load average (Windows) it returns at once, (True, None).
    """
    deadline = clock() + timeout_s
    while True:
        load = read_load()
        if load is None or load < below:
            return True, load
        left = deadline - clock()
        if left <= 0:
            return False, load
        if on_wait:
            on_wait(load, left)
        sleep(min(poll_s, left))
