"""One real job, side by side: onnxruntime alone vs qcompile (cold, cached, `per_channel` changed), each run as
its own process, timed as a whole with its peak RSS; then Entropy calibration on 512 samples before and after
qcompile's bounded-memory calibration; then the fully cached demo build against `import qcompile`.

The job: ResNet-50 FP32 ONNX (torchvision, seeded random init: latency and fidelity only) -> static QDQ,
per-channel int8 weights, uint8 activations, MinMax, 128 calibration samples; FP32 and INT8 evaluated on 32
samples and timed at batch 1 (10 warm-up, 50 timed runs), 2 threads. qcompile gets the ONNX file and an
`.npz` of the samples through a user recipe folder, as a user would.

    python benchmarks/olive_job.py                    # everything (~15 min on 2 cores)
    python benchmarks/olive_job.py --skip-entropy     # the job table and the cached demo only
    python benchmarks/olive_job.py --work DIR         # keep the exported model and samples between runs
    python benchmarks/olive_job.py --parts job,entropy  # without the demo (it needs the `demo` extra)

Measure on an otherwise idle machine: every figure is wall time. Children run with Python's bytecode cache on
(PYTHONDONTWRITEBYTECODE removed), as users run them. "The floor" is the issue's: Python importing hydra,
pydantic and networkx.
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

HERE = Path(__file__).resolve().parent
CALIB, EVAL = 128, 32

PREPARE = r"""
import sys, numpy as np, torch, torchvision
work, n = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
m = torchvision.models.resnet50().eval()
torch.onnx.export(m, (torch.randn(1, 3, 224, 224),), f"{work}/resnet50.onnx", input_names=["input"],
                  output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("N")},), external_data=False,
                  opset_version=18)
rng = np.random.default_rng(0)
x = rng.standard_normal((n, 3, 224, 224), dtype=np.float32)
np.savez(f"{work}/samples.npz", x=x[:%d])
np.savez(f"{work}/samples512.npz", x=x)
""" % (CALIB + EVAL)

# onnxruntime alone: what a user writes by hand for the same job (the ORT quantization example's shape).
ORT_ALONE = r"""
import sys, time, numpy as np, onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
work, out = sys.argv[1], sys.argv[2]
x = np.load(f"{work}/samples.npz")["x"]
calib, evals = x[:%d], x[%d:]
quant_pre_process(f"{work}/resnet50.onnx", f"{out}/prep.onnx")
class Reader(CalibrationDataReader):
    def __init__(self): self.it = iter(calib[i:i + 1] for i in range(len(calib)))
    def get_next(self):
        b = next(self.it, None)
        return None if b is None else {"input": b}
quantize_static(f"{out}/prep.onnx", f"{out}/int8.onnx", Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
res = {}
for name, path in (("fp32", f"{work}/resnet50.onnx"), ("int8", f"{out}/int8.onnx")):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = np.concatenate([s.run(None, {"input": evals[i:i + 8]})[0] for i in range(0, len(evals), 8)])
    res[name] = outs.argmax(1)
    one = evals[:1]
    for _ in range(10):
        s.run(None, {"input": one})
    t = []
    for _ in range(50):
        t0 = time.perf_counter(); s.run(None, {"input": one}); t.append(time.perf_counter() - t0)
    res[name + "_p50_ms"] = float(np.median(t) * 1000)
    del s
print("top-1 agreement", float((res["fp32"] == res["int8"]).mean()), "p50 ms", res["fp32_p50_ms"], res["int8_p50_ms"])
""" % (CALIB, CALIB)

RECIPE = """# The benchmark job as a user writes it: paths relative to this file.
defaults:
  - base
  - model: onnx
  - data: npz
  - quant: int8_static
  - target: ort_cpu
  - _self_

name: olive_job
model: {path: ../resnet50.onnx}
data: {path: ../samples.npz, y_key: null, eval_samples: %d}
quant:
  per_channel: true
  calibration: {method: minmax, samples: %d, batch_size: 16}
eval: {max_accuracy_drop: null, batch_size: 8}
bench: {batch_sizes: [1], warmup: 10, iterations: 50, ci_width: 0.9, max_seconds: 60}
""" % (EVAL, CALIB)

# Entropy calibration as qcompile did it before (ORT's histogram calibrator fed batches of 16) and as it does now.
ENTROPY_BEFORE = r"""
import sys, numpy as np
from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
model, data, work = sys.argv[1:4]
x = np.load(data)["x"][:512]
cal = create_calibrator(model, None, augmented_model_path=f"{work}/aug.onnx",
                        calibrate_method=CalibrationMethod.Entropy, extra_options={"symmetric": False})
class One:
    def __init__(self, feed): self.feed = feed
    def get_next(self):
        f, self.feed = self.feed, None
        return f
for i in range(0, len(x), 16):
    cal.collect_data(One({"input": x[i:i + 16]}))
print(len(cal.compute_data().data), "tensors")
"""

ENTROPY_NOW = r"""
import sys, numpy as np
from pathlib import Path
from qcompile.steps.arrays import save_samples
from qcompile.steps.base import StepContext
from qcompile.steps.calibrate import CalibrateParams, OrtCalibrateStep
model, data, work = sys.argv[1:4]
save_samples(Path(work) / "calib.npz", {"input": np.load(data)["x"][:512]})
ctx = StepContext(inputs={"model": Path(model), "data": Path(work) / "calib.npz"}, workdir=Path(work),
                  outputs={"ranges": "calibration.json"})
print(OrtCalibrateStep().run(ctx, CalibrateParams(method="entropy", batch_size=16, percentile=99.999,
                                                  symmetric=False, op_types=None)))
"""


def timed(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB, output) of one child process, its own rusage only."""
    t0 = time.perf_counter()
    env = {**os.environ, **(env or {})}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run Python: modules load from their bytecode cache
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    dt = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])}... failed ({proc.returncode}):\n{out[-3000:]}")
    return dt, usage.ru_maxrss / 1024, out


def qcompile_build(recipes: Path, cache: Path, cwd: Path, *overrides: str, env: dict | None = None):
    """A user's command line, run again as it was: each build gets its own qcompile-out/job/<time> folder under
    ``cwd`` (no hydra.run.dir on the command line, so a repeated command is the same command)."""
    cmd = [sys.executable, "-m", "qcompile", "build", "--config-dir", str(recipes), "--config-name", "job",
           *overrides]
    cwd.mkdir(parents=True, exist_ok=True)
    return timed(cmd, {"QCOMPILE_CACHE_DIR": str(cache), **(env or {})}, cwd=str(cwd))


def prepare(work: Path) -> None:
    if not (work / "samples512.npz").exists():
        print("exporting ResNet-50 and writing samples ...", flush=True)
        timed([sys.executable, "-c", PREPARE, str(work), "544"])
    (work / "recipes").mkdir(exist_ok=True)
    (work / "recipes" / "job.yaml").write_text(RECIPE)


def job_table(work: Path, rows: list) -> Path:
    """Runs the job table; returns the pre-processed model of the batch-16 build (for the entropy runs)."""
    with tempfile.TemporaryDirectory(dir=work) as d:
        t, rss, out = timed([sys.executable, "-c", ORT_ALONE, str(work), d])
    rows.append(("onnxruntime alone (batch-1 reader)", t, rss, out.strip().splitlines()[-1]))
    print(rows[-1], flush=True)
    recipes, runs = work / "recipes", work / "runs"
    subprocess.run(["rm", "-rf", str(runs)], check=True)
    for bs in (1, 16, 64):
        cache = work / f"cache-b{bs}"
        subprocess.run(["rm", "-rf", str(cache)], check=True)
        t, rss, _ = qcompile_build(recipes, cache, runs, f"quant.calibration.batch_size={bs}")
        rows.append((f"qcompile cold, calibration batch {bs}", t, rss, ""))
        print(rows[-1], flush=True)
    cache, same = work / "cache-b16", "quant.calibration.batch_size=16"
    time.sleep(2.5)  # let the cold build's files age past the racy window, as any pause before a rebuild does
    warm = [qcompile_build(recipes, cache, runs, same) for _ in range(3)]
    rows.append(("qcompile fully cached (best of 3)", *min(warm, key=lambda r: r[0])[:2],
                 f"runs: {', '.join(f'{r[0]:.2f}' for r in warm)} s"))
    t, rss, _ = qcompile_build(recipes, cache, runs, same, "quant.per_channel=false")
    rows.append(("qcompile, per_channel changed", t, rss, "reruns quantize, int8 evaluate/benchmark/compare, bundle"))
    print(rows[-2:], flush=True)
    lock = json.loads(next((runs / "qcompile-out").glob("*/*/qcompile.lock.json")).read_text())
    digest = lock["nodes"]["optimize"]["outputs"]["model"]
    return cache / "blobs" / digest[:2] / digest


def entropy_rows(work: Path, prep: Path, rows: list) -> None:
    for label, code in (("Entropy, 512 samples, before (ORT calibrator, batches of 16)", ENTROPY_BEFORE),
                        ("Entropy, 512 samples, now (qcompile calibrate step)", ENTROPY_NOW)):
        with tempfile.TemporaryDirectory(dir=work) as d:
            t, rss, out = timed([sys.executable, "-c", code, str(prep), str(work / "samples512.npz"), d])
        rows.append((label, t, rss, out.strip().splitlines()[-1][:100]))
        print(rows[-1], flush=True)


def demo_rows(work: Path, rows: list) -> None:
    """`qcompile build` of the demo, as `make demo` runs it, in a folder of its own."""
    env, runs = {"QCOMPILE_CACHE_DIR": str(work / "cache-demo")}, work / "demo-runs"
    runs.mkdir(exist_ok=True)
    timed([sys.executable, "-m", "qcompile", "build"], env, cwd=str(runs))
    time.sleep(2.5)
    warm = [timed([sys.executable, "-m", "qcompile", "build"], env, cwd=str(runs)) for _ in range(3)]
    rows.append(("demo fully cached (best of 3)", *min(warm, key=lambda r: r[0])[:2],
                 f"runs: {', '.join(f'{r[0]:.2f}' for r in warm)} s"))


# The least any Hydra command line pays: Hydra's own main composing the demo recipe for a task that does nothing.
EMPTY_HYDRA_APP = """
import sys, hydra, pydantic, networkx
@hydra.main(config_path="pkg://qcompile.recipes", config_name="demo", version_base="1.3")
def main(cfg):
    pass
main()
"""


def import_rows(rows: list, work: Path) -> None:
    """`import qcompile` and the issue's floor; each cached row gets its ratio to both."""
    imp = min(timed([sys.executable, "-c", "import qcompile"]) for _ in range(3))
    floor = min(timed([sys.executable, "-c", "import hydra, pydantic, networkx"]) for _ in range(3))
    py = min(timed([sys.executable, "-c", "pass"]) for _ in range(3))
    app = min(timed([sys.executable, "-c", EMPTY_HYDRA_APP, f"hydra.run.dir={work}/out/empty-{time.time_ns()}"])
              for _ in range(3))
    for i, (label, t, rss, note) in enumerate(rows):
        if "fully cached" in label:
            rows[i] = (label, t, rss, f"{t / imp[0]:.2f}x `import qcompile`, {t / floor[0]:.2f}x the floor, "
                                      f"{t / app[0]:.2f}x an empty Hydra app" + (f"; {note}" if note else ""))
    rows.append(("python -c 'import qcompile'", imp[0], imp[1], f"python alone {py[0]:.3f} s"))
    rows.append(("floor: python -c 'import hydra, pydantic, networkx'", floor[0], floor[1], ""))
    rows.append(("an empty Hydra app composing the demo recipe", app[0], app[1], "hydra.main, a task doing nothing"))


def print_table(rows: list, work: Path) -> None:
    base = next((r[1] for r in rows if r[0].startswith("onnxruntime alone")), None)
    print(f"\n{'run':<62} {'seconds':>8} {'vs ORT':>7} {'peak RSS MB':>12}  note")
    for label, t, rss, note in rows:
        ratio = f"{t / base:6.2f}x" if base else "      -"
        print(f"{label:<62} {t:8.2f} {ratio} {rss:12.0f}  {note}")
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"\nmachine: {os.cpu_count()} cores, {affinity} usable by this process; work folder: {work}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="folder for the model, samples and caches")
    ap.add_argument("--parts", default="job,demo,entropy",
                    help="comma-separated, run in this order: job, demo, entropy (entropy needs job); '' prepares only")
    ap.add_argument("--skip-entropy", action="store_true", help="the same as leaving entropy out of --parts")
    ap.add_argument("--skip-demo", action="store_true", help="the same as leaving demo out of --parts")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p and not (args.skip_entropy and p == "entropy")
             and not (args.skip_demo and p == "demo")]
    work = (args.work or Path(tempfile.mkdtemp(prefix="qc-olive-job-"))).resolve()
    work.mkdir(parents=True, exist_ok=True)
    prepare(work)
    rows: list = []
    prep, imports_done = None, False
    for part in parts:
        if part == "entropy" and not imports_done:  # before the long part: the cached rows' ratios are ready
            import_rows(rows, work)
            imports_done = True
        if part == "job":
            prep = job_table(work, rows)
        elif part == "demo":
            demo_rows(work, rows)
        elif part == "entropy":
            if prep is None:
                raise SystemExit("entropy needs the job part first (it calibrates the job's pre-processed model)")
            entropy_rows(work, prep, rows)
        else:
            raise SystemExit(f"unknown part {part!r}")
        print_table(rows, work)
    if parts and not imports_done:
        import_rows(rows, work)
        print_table(rows, work)

if __name__ == "__main__":
    main()
