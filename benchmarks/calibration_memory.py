"""Peak memory of Entropy calibration on ResNet-50: qcompile's batch-by-batch collection vs ORT's one-shot.

ORT's quantize_static hands the calibrator one reader over all samples, and the histogram calibrators keep
every intermediate tensor of every sample before building histograms. qcompile feeds one batch per
``collect_data`` call (ORT merges the histograms), so memory stays at one batch. Each mode runs in a fresh
process so its peak RSS is its own.

    python benchmarks/calibration_memory.py [SAMPLES]     # default 64 samples, batch 8
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
import numpy as np
from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator
model, mode, n, bs, work = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
x = np.random.default_rng(0).standard_normal((n, 3, 224, 224), dtype=np.float32)
cal = create_calibrator(model, None, augmented_model_path=f"{work}/aug-{mode}.onnx",
                        calibrate_method=CalibrationMethod.Entropy)
name = cal.model.graph.input[0].name

class Reader:
    def __init__(self, batches): self.it = iter(batches)
    def get_next(self): return next(self.it, None)

batches = [{name: x[i:i + bs]} for i in range(0, n, bs)]
t0 = time.perf_counter()
if mode == "batched":
    for b in batches:
        cal.collect_data(Reader([b]))
else:
    cal.collect_data(Reader(batches))
ranges = cal.compute_data()
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - t0, "tensors": len(ranges.data)}))
"""


def _prep_model() -> Path:
    """The pre-processed FP32 ResNet-50 from a (cached) build of the resnet50_ort_cpu recipe."""
    import qcompile
    from qcompile.run.progress import Reporter

    recipe = qcompile.load_recipe("resnet50_ort_cpu", ["bench.iterations=5", "bench.batch_sizes=[1]"])
    result = qcompile.build(recipe, tempfile.mkdtemp(prefix="qc-calmem-"), reporter=Reporter(), check_gates=False)
    lock = json.loads((result.out_dir / "qcompile.lock.json").read_text())
    return qcompile.Cache().blobs.path(lock["nodes"]["optimize"]["outputs"]["model"])


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    model = _prep_model()
    results = {}
    with tempfile.TemporaryDirectory() as work:
        for mode in ("batched", "one-shot"):
            out = subprocess.run([sys.executable, "-c", CHILD, str(model), mode, str(samples), "8", work],
                                 capture_output=True, text=True, env=os.environ.copy())
            if out.returncode != 0:
                raise SystemExit(out.stderr[-2000:])
            results[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"\nEntropy calibration, ResNet-50, {samples} samples, batch 8")
    for mode, r in results.items():
        print(f"{mode:>9}: peak RSS {r['peak_rss_mb']:8.0f} MB, {r['seconds']:6.1f} s, {r['tensors']} tensors")
    ratio = results["one-shot"]["peak_rss_mb"] / results["batched"]["peak_rss_mb"]
    print(f"one-shot / batched peak memory: {ratio:.1f}x")


if __name__ == "__main__":
    main()
