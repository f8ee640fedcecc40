"""The real case, side by side from one run on a fresh cache: FP32, static INT8 PTQ (fails its gate), PTQ with the
accuracy-aware fallback, and QAT, on the packaged recipes ``digits_mobile_ptq``, ``digits_mobile_fallback`` and
``digits_mobile_qat`` (a MobileNetV3-style net trained on 4,000 real MNIST digits, judged on 1,000 held-out ones).

    python benchmarks/real_case.py

Each recipe is built in a fresh process, one after the other on one cache: the first build trains the FP32 model,
the others reuse it, so each build's time is what that recipe adds. Latency is ORT at batch 1, one session at a time.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECIPES = ("digits_mobile_ptq", "digits_mobile_fallback", "digits_mobile_qat")


def _build(recipe: str, home: Path) -> tuple[float, int, dict]:
    env = {**os.environ, "QCOMPILE_CACHE_DIR": str(home / "cache")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "qcompile", "build", "-cn", recipe, f"hydra.run.dir={recipe}"],
                          cwd=home, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    report = home / recipe / "report.json"
    if not report.exists():
        sys.exit(f"{recipe} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return seconds, proc.returncode, json.loads(report.read_text())


def _row(label: str, m: dict, seconds: float | None, note: str) -> str:
    lat = m["latency_ms"].get("1") or m["latency_ms"].get(1)
    ci = lat["p50_ci"]
    took = "" if seconds is None else f"{seconds:.0f} s"
    return (f"| {label} | {m['accuracy'] * 100:.2f}% | {lat['p50']:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
            f"{m['size_bytes'] / 1024:.0f} KiB | {took} | {note} |")


def main() -> None:
    import onnxruntime
    import torch

    with tempfile.TemporaryDirectory() as d:
        home = Path(d)
        runs = {r: _build(r, home) for r in RECIPES}
    (ptq_s, ptq_rc, ptq), (fb_s, fb_rc, fb), (qat_s, qat_rc, qat) = (runs[r] for r in RECIPES)
    search = fb["search"]
    chosen = search["trials"][search["chosen"]]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, isa {ptq['target'].get('isa')}")
    print("| model | top-1 (1,000 digits) | p50 ms at batch 1 [95% CI] | size | build time | |")
    print("|---|---:|---:|---:|---:|---|")
    print(_row("FP32", ptq["metrics"]["fp32"], None, "trained in the PTQ build"))
    print(_row("INT8 PTQ", ptq["metrics"]["int8"], ptq_s,
               f"exit {ptq_rc}: drop {ptq['accuracy_drop']['int8'] * 100:.2f} points (cold: trains FP32)"))
    print(_row("INT8 PTQ + fallback", fb["metrics"]["int8"], fb_s,
               f"exit {fb_rc}: {len(chosen['float_nodes'])} node(s) in float ({', '.join(chosen['float_nodes'])}), "
               f"{len(search['trials'])} trials"))
    print(_row("INT8 QAT", qat["metrics"]["int8"], qat_s, f"exit {qat_rc}"))


if __name__ == "__main__":
    main()
