"""Speed-up verdicts on a quiet and on a busy machine: timed apart (the old method) vs timed as a pair.

For the demo CNN and ResNet-50 (random init, latency only), FP32 and INT8 from one build of each recipe:

- **apart**: each model timed alone to the bench section's CI target (as ``benchmark.ort`` does), one after the
  other, and judged by whether the two p50 intervals overlap (``speed_verdict``);
- **apart, FP32 cached**: what a build did before pairs, since FP32 is measured once and reused: the variant timed
  now against the FP32 timing of the *other* condition (quiet FP32 for the busy rows, busy FP32 for the quiet ones);
- **paired**: ``speedup.ort`` as a build runs it, in both pairings (``interleaved``: both sessions alive, not
  spinning; ``one_alive``: one session at a time, deployed settings).

Each is repeated ``--reps`` times with the machine quiet, then with two CPU-burning processes beside it
(``python -c "while True: pass"``, started 5 s before). Printed: every verdict, the speed-up's median and range, the
median interval, the seconds each measurement took (both models), and how many repetitions' verdicts differ from
the one the same method gave most often on the quiet machine.

    python benchmarks/paired_speedup.py [--reps 5] [--models demo,resnet50]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

import qcompile
from qcompile.report.build_report import speed_verdict
from qcompile.run.progress import Reporter
from qcompile.steps.arrays import save_samples
from qcompile.steps.base import StepContext
from qcompile.steps.benchmark import measure
from qcompile.steps.host_load import LoadProbe
from qcompile.steps.ort_session import session
from qcompile.steps.speedup import OrtSpeedupStep, SpeedupParams

RECIPES = {"demo": ("demo", []), "resnet50": ("resnet50_ort_cpu", ["data.eval_samples=16"])}
BENCH = {"warmup": 5, "iterations": 50, "ci_width": 0.05, "max_seconds": 10.0}
RUNTIME = {"threads": 0, "level": "all"}


def models(name: str) -> tuple[Path, Path]:
    """(fp32, int8) ONNX files from one (usually cached) build of the model's recipe."""
    recipe, overrides = RECIPES[name]
    out = Path(tempfile.mkdtemp(prefix=f"qc-pair-{name}-"))
    qcompile.build(qcompile.load_recipe(recipe, overrides), out, reporter=Reporter(quiet=True), check_gates=False)
    return out / "artifacts" / "model.fp32.onnx", out / "artifacts" / "model.int8.onnx"


def feed(path: Path, batch: int) -> dict[str, np.ndarray]:
    sess = session(path, RUNTIME)
    rng = np.random.default_rng(0)
    return {i.name: rng.random([batch] + [d for d in i.shape[1:]], dtype=np.float32) for i in sess.get_inputs()}


def apart(path: Path, x: dict[str, np.ndarray]) -> dict:
    """One model timed alone, as ``benchmark.ort`` times it: its p50 and the p50's 95% CI."""
    sess = session(path, RUNTIME)
    for _ in range(BENCH["warmup"]):
        sess.run(None, x)
    m = measure(lambda: sess.run(None, x), BENCH["iterations"], BENCH["ci_width"], BENCH["max_seconds"])
    return m.summary()


def paired(fp32: Path, int8: Path, x: dict[str, np.ndarray], pairing: str, work: Path) -> dict:
    """``speedup.ort`` on the two models, as a build runs it."""
    save_samples(work / "samples.npz", x)
    out = Path(tempfile.mkdtemp(dir=work))
    ctx = StepContext(inputs={"reference": fp32, "model": int8, "data": work / "samples.npz"}, workdir=out,
                      outputs=dict(OrtSpeedupStep.outputs))
    bs = len(next(iter(x.values())))
    p = SpeedupParams(batch_sizes=[bs], runtime=RUNTIME, pairing=pairing, **BENCH)
    return OrtSpeedupStep().run(ctx, p)[str(bs)]


@contextlib.contextmanager
def burners(n: int):
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(5)
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()
        time.sleep(5)  # let the burners' load fade before the next quiet measurement


def run(model: str, batch: int, reps: int) -> dict:
    fp32, int8 = models(model)
    x = feed(fp32, batch)
    rows: dict[tuple[str, str], list[tuple[float, tuple[float, float] | None, str, float]]] = {}
    fp32_apart: dict[str, list[dict]] = {}
    loads = {}
    with tempfile.TemporaryDirectory() as work:
        for condition in ("quiet", "busy"):
            with burners(2) if condition == "busy" else contextlib.nullcontext():
                probe = LoadProbe()
                fp32_apart[condition], int8_apart = [], []
                for _ in range(reps):
                    f, q = apart(fp32, x), apart(int8, x)
                    fp32_apart[condition].append(f)
                    int8_apart.append(q)
                    rows.setdefault(("apart", condition), []).append(
                        (f["p50"] / q["p50"], None, speed_verdict(f, q), f["seconds"] + q["seconds"]))
                    probe.sample()
                    for pairing in ("interleaved", "one_alive"):
                        s = paired(fp32, int8, x, pairing, Path(work))
                        rows.setdefault((f"paired, {pairing}", condition), []).append(
                            (s["speedup"], tuple(s["ci"]), s["verdict"], s["seconds"]))
                        probe.sample()
                loads[condition] = probe.summary()
                rows[("apart, FP32 cached", condition)] = int8_apart  # filled below, once both conditions ran
    for condition, other in (("quiet", "busy"), ("busy", "quiet")):
        cached = fp32_apart[other][0]
        rows[("apart, FP32 cached", condition)] = [(cached["p50"] / q["p50"], None, speed_verdict(cached, q),
                                                     q["seconds"]) for q in rows[("apart, FP32 cached", condition)]]
    return {"rows": rows, "loads": loads}


def report(model: str, batch: int, result: dict) -> None:
    rows, loads = result["rows"], result["loads"]
    print(f"\n{model}, batch {batch}: INT8 speed-up over FP32")
    for condition in ("quiet", "busy"):
        ld = loads[condition]
        print(f"  {condition}: load {ld['loadavg_before']} -> peak {ld['loadavg_max']}, CPU pressure "
              f"{ld['cpu_pressure']}, busy: {ld['busy'] or 'no'}")
    print(f"  {'method':<22} {'machine':<7} {'speed-up median [min, max]':<27} {'median 95% CI':<15} "
          f"{'s/measure':>9}  verdicts    changed")
    for method in ("apart", "apart, FP32 cached", "paired, interleaved", "paired, one_alive"):
        # A verdict "changed" when it differs from what the same method said most often on the quiet machine.
        quiet = Counter(v for _, _, v, _ in rows[(method, "quiet")]).most_common(1)[0][0]
        for condition in ("quiet", "busy"):
            rs = rows[(method, condition)]
            ratios = [r for r, _, _, _ in rs]
            cis = [ci for _, ci, _, _ in rs if ci]
            ci = (f"[{statistics.median(c[0] for c in cis):.2f}, {statistics.median(c[1] for c in cis):.2f}]"
                  if cis else "(two p50 CIs)")
            changed = sum(v != quiet for _, _, v, _ in rs)
            verdicts = "".join({"faster": "F", "slower": "S", "no measurable difference": "="}.get(v, "?")
                               for _, _, v, _ in rs)
            seconds = statistics.median(t for _, _, _, t in rs)
            print(f"  {method:<22} {condition:<7} {statistics.median(ratios):5.2f}x [{min(ratios):.2f}, "
                  f"{max(ratios):.2f}]{'':<11} {ci:<15} {seconds:9.1f}  {verdicts:<11} {changed}/{len(rs)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--models", default="demo,resnet50")
    a = ap.parse_args()
    import onnxruntime

    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, onnxruntime {onnxruntime.__version__}; F faster, S slower, = no measurable "
          "difference")
    for model in a.models.split(","):
        for batch in ((1, 8) if model == "demo" else (1,)):
            report(model, batch, run(model, batch, a.reps))


if __name__ == "__main__":
    sys.exit(main())
