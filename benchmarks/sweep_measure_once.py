"""A 6-variant quant sweep (3 calibration methods x per-channel on/off) of the ResNet-50 recipe through one
empty shared cache: how many times FP32 was evaluated and timed, and the sweep's wall time.

Jobs run one after another (Hydra's basic launcher), so no two measurements share the 2 cores.

    python benchmarks/sweep_measure_once.py [--keep DIR]

Works on the code before and after "measure each variant once": before it, the ``evaluate`` and ``benchmark``
steps each evaluated/timed FP32 together with the quantized model; after it, ``evaluate.fp32`` and
``benchmark.fp32`` are their own nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

FP32_EVAL_STEPS = ("evaluate", "evaluate.fp32")
FP32_TIME_STEPS = ("benchmark", "benchmark.fp32")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="keep the sweep folder and cache here instead of a temp folder")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="qcompile-sweep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(work / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "qcompile", "build", "--config-name", "resnet50_ort_cpu", "-m",
           "quant.calibration.method=minmax,entropy,percentile", "quant.per_channel=true,false",
           f"hydra.sweep.dir={work / 'sweep'}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        return proc.returncode
    reports = sorted((work / "sweep").glob("*/report.json"))
    ran = [s for r in reports for s in json.loads(r.read_text())["steps"] if s["status"] == "ran"]
    fp32_evals = sum(s["name"] in FP32_EVAL_STEPS for s in ran)
    fp32_times = sum(s["name"] in FP32_TIME_STEPS for s in ran)
    per_step: dict[str, float] = {}
    for s in ran:
        per_step[s["name"]] = per_step.get(s["name"], 0.0) + s["seconds"]
    print(f"variants built          : {len(reports)}")
    print(f"FP32 evaluated          : {fp32_evals} time(s)")
    print(f"FP32 timed (benchmark)  : {fp32_times} time(s)")
    print(f"sweep wall time         : {wall:.1f} s (empty cache, jobs one after another)")
    print("seconds per step (summed over the sweep):")
    for name, sec in sorted(per_step.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22} {sec:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
