"""Time of the demo build: first (cold cache) and fully cached, each in a fresh process as a user runs it.

    python benchmarks/cached_build.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def _timed_build(cache: str, out: str) -> tuple[float, bool, int]:
    env = {**os.environ, "QCOMPILE_CACHE_DIR": cache, "PYTHONPROFILEIMPORTTIME": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qcompile", "build", f"hydra.run.dir={out}"],
                          capture_output=True, text=True, env=env)
    dt = time.perf_counter() - t0
    torch = any(line.rsplit("|", 1)[-1].strip() == "torch" for line in proc.stderr.splitlines())
    return dt, torch, proc.returncode


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        cold = _timed_build(f"{d}/cache", f"{d}/cold")
        warm = [_timed_build(f"{d}/cache", f"{d}/warm{i}") for i in range(3)]
    print(f"demo, cold cache:   {cold[0]:6.2f} s (exit {cold[2]}, torch imported: {cold[1]})")
    best = min(w[0] for w in warm)
    print(f"demo, fully cached: {best:6.2f} s best of 3 (exit {warm[0][2]}, torch imported: {warm[0][1]})")
    print(f"cold / cached ratio: {cold[0] / best:.1f}x")


if __name__ == "__main__":
    main()
