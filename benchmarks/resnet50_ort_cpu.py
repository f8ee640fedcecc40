"""ResNet-50 (random init) FP32 vs INT8 on ONNX Runtime CPU, from one run of the resnet50_ort_cpu recipe.

Prints p50 latency per batch size and the INT8 speed-up, the same for ORT's int8-activation default (to show
why qcompile picks uint8 activations on x86), and the time of the fully cached rebuild.

    python benchmarks/resnet50_ort_cpu.py            # uses QCOMPILE_CACHE_DIR or the user cache
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time

import qcompile
from qcompile.run.progress import Reporter


def _build(overrides: list[str]) -> dict:
    recipe = qcompile.load_recipe("resnet50_ort_cpu", overrides)
    return qcompile.build(recipe, tempfile.mkdtemp(prefix="qc-bench-"), reporter=Reporter(),
                          check_gates=False).report


def main() -> None:
    common = ["bench.batch_sizes=[1,8]", "bench.warmup=5", "bench.iterations=40"]
    rows = [("uint8 act (auto)", _build(common)),
            ("uint8 act, 1 thread", _build(common + ["target.intra_op_threads=1"])),
            ("int8 act", _build(common + ["quant.activation_type=int8"]))]
    print("\nResNet-50, ONNX Runtime CPU, random init (latency and fidelity only)")
    print(f"{'variant':<20} {'bs':>3} {'fp32 p50 ms':>12} {'int8 p50 ms':>12} {'speed-up':>9}")
    for label, rep in rows:
        m = rep["metrics"]
        for bs in m["fp32"]["latency_ms"]:
            f, q = m["fp32"]["latency_ms"][bs]["p50"], m["int8"]["latency_ms"][bs]["p50"]
            print(f"{label:<20} {bs:>3} {f:>12.2f} {q:>12.2f} {f / q:>8.2f}x")
        fid = rep["fidelity"]["int8"]
        print(f"{'':<20} top-1 agreement {fid['top1_agreement']:.3f}, cosine {fid['cosine_mean']:.4f}, "
              f"size {m['fp32']['size_bytes'] / 2**20:.1f} MiB -> {m['int8']['size_bytes'] / 2**20:.1f} MiB")

    # The fully cached rebuild, through the CLI as a user runs it, in a fresh process: the same command line twice
    # in one folder.
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-X", "importtime", "-m", "qcompile", "build", "--config-name",
               "resnet50_ort_cpu", *common]
        for attempt in ("first", "again"):
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy(), cwd=d)
            dt = time.perf_counter() - t0
            loaded = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
            print(f"\nfully cached rebuild ({attempt}): {dt:.2f} s (exit {proc.returncode}, torch imported: "
                  f"{'torch' in loaded}, hydra imported: {'hydra' in loaded})")


if __name__ == "__main__":
    sys.exit(main())
