"""Evaluation: accuracy of FP32 and quantized models on the held-out split, and their agreement."""

from __future__ import annotations

import json
from typing import Any

from .arrays import fixed_batch, load_samples, model_batches
from .base import Step, StepContext, StepParams, register
from .ort_session import cpu_session


class EvaluateParams(StepParams):
    batch_size: int
    threads: int
    level: str


@register
class OrtEvaluate(Step):
    """Accuracy (with labels), top-1 agreement and output cosine of FP32 vs quantized."""

    kind = "evaluate.ort"
    Params = EvaluateParams
    inputs = ("fp32", "quant", "data")
    outputs = {"metrics": "metrics.json"}
    libraries = ("onnxruntime", "numpy")

    def run(self, ctx: StepContext, p: EvaluateParams) -> dict[str, Any]:
        import numpy as np

        x, y = load_samples(ctx.inputs["data"])
        logits = {}
        for variant in ("fp32", "quant"):
            sess = cpu_session(ctx.inputs[variant], p.threads, p.level)
            inp = sess.get_inputs()[0]
            chunks = model_batches(x, p.batch_size, fixed_batch(inp.shape))
            outs = [sess.run(None, {inp.name: chunk})[0][:n]
                    for chunk, n in ctx.track(chunks, len(chunks), f"evaluate {variant}")]
            logits[variant] = np.concatenate(outs).reshape(len(x), -1).astype(np.float64)
        ref, q = logits["fp32"], logits["quant"]
        cos = (ref * q).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(q, axis=1) + 1e-12)
        top_ref, top_q = ref.argmax(1), q.argmax(1)
        metrics: dict[str, Any] = {
            "samples": len(x),
            "fidelity": {
                "top1_agreement": round(float((top_ref == top_q).mean()), 6),
                "cosine_mean": round(float(cos.mean()), 6),
                "cosine_min": round(float(cos.min()), 6),
                "max_abs_diff": round(float(np.abs(ref - q).max()), 6),
            },
            "accuracy": None,
        }
        if y is not None:
            acc_ref, acc_q = float((top_ref == y).mean()), float((top_q == y).mean())
            metrics["accuracy"] = {"fp32": round(acc_ref, 6), "quant": round(acc_q, 6),
                                   "drop": round(acc_ref - acc_q, 6)}
        ctx.out("metrics").write_text(json.dumps(metrics, indent=2))
        return metrics

    def check(self, result: dict[str, Any], gate: dict[str, Any]) -> str | None:
        problems = []
        acc, limit = result.get("accuracy"), gate.get("max_accuracy_drop")
        if acc is not None and limit is not None and acc["drop"] > limit:
            problems.append(f"quantized accuracy {acc['quant']:.4f} is {acc['drop'] * 100:.2f} points below FP32 "
                            f"{acc['fp32']:.4f}; eval.max_accuracy_drop allows {limit * 100:.2f}")
        fid = result["fidelity"]
        for key, metric in (("min_top1_agreement", "top1_agreement"), ("min_cosine", "cosine_mean")):
            if gate.get(key) is not None and fid[metric] < gate[key]:
                problems.append(f"{metric} with FP32 is {fid[metric]:.4f}; eval.{key} asks at least {gate[key]}")
        return "; ".join(problems) or None
