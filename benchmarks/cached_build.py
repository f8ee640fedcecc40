"""Time of the demo build: first (cold cache) and fully cached, each in a fresh process as a user runs it.

    python benchmarks/cached_build.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time


def _timed_build(cache: str, cwd: str) -> tuple[float, bool, bool, int]:
    """(seconds, torch imported, hydra imported, exit code) of `qcompile build` run in ``cwd``: the same command
    line each time, each build in its own qcompile-out/demo/<time> folder, as a user rebuilding. A build that
    composed with Hydra records the composition unless code it stamps changed in the last 2 s (Python writing a
    package's first bytecode folder counts), so the first rebuild can still compose."""
    env = {**os.environ, "QCOMPILE_CACHE_DIR": cache, "PYTHONPROFILEIMPORTTIME": "1"}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run Python
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qcompile", "build"], capture_output=True, text=True, env=env,
                          cwd=cwd)
    dt = time.perf_counter() - t0
    loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    return dt, "torch" in loaded, "hydra" in loaded, proc.returncode


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        cold = _timed_build(f"{d}/cache", d)
        warm = [_timed_build(f"{d}/cache", d) for i in range(3)]
        os.environ["QCOMPILE_COMPOSE_MEMO"] = "0"
        hydra = [_timed_build(f"{d}/cache", d) for i in range(3)]
    print(f"demo, cold cache:   {cold[0]:6.2f} s (exit {cold[3]}, torch imported: {cold[1]})")
    best = min(w[0] for w in warm)
    print(f"demo, fully cached: {best:6.2f} s best of 3 (runs: {', '.join(f'{w[0]:.2f}' for w in warm)} s; exit "
          f"{[w[3] for w in warm]}, torch imported {[w[1] for w in warm]}, hydra imported {[w[2] for w in warm]})")
    print(f"  composing with Hydra (QCOMPILE_COMPOSE_MEMO=0): {min(h[0] for h in hydra):6.2f} s best of 3")
    print(f"cold / cached ratio: {cold[0] / best:.1f}x")


if __name__ == "__main__":
    main()
