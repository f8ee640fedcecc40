"""Evaluation of one model variant on the held-out split: its outputs (for comparison with the reference) and,
with labels, its task scores. FP32's evaluation has a key no quant option touches, so it runs once per sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..kinds.measure import GATES, EvalSpec
from ..signature import Signature
from .arrays import count, load_pairs, load_samples, model_batches, save_samples, session_fixed_batch
from .base import Step, StepContext, StepParams, register
from .metrics import scores
from .ort_session import session
from .user_metrics import user_scores


class EvaluateParams(StepParams):
    """The eval section (its batch size and user metrics; the gates are judged by compare), the model's signature,
    the target's runtime and the module files of the user metrics (in metric-name order)."""

    signature: Signature
    eval: EvalSpec
    runtime: dict[str, Any]
    metric_sources: list[Path] = []  # their content digests join the key: editing a metric re-evaluates


@register
class OrtEvaluateStep(Step):
    """Runs one variant over the evaluation samples with the target's runtime; writes outputs and scores."""

    kind = "evaluate.ort"
    # 2: one variant per node; outputs kept for compare; 3: non-finite outputs and labels checked; 4: params hold
    # the eval section; 5: scored pairs (Spearman, Pearson), token batches cut to their longest text; 6: user metrics
    version = 6
    Params = EvaluateParams
    inputs = ("model", "data")
    outputs = {"outputs": "outputs.npz", "metrics": "metrics.json"}
    libraries = ("onnxruntime", "numpy")
    # Gates change no output: a stricter one rejudges the stored result instead of evaluating again.
    unkeyed = tuple(f"eval.{gate}" for gate in GATES)
    file_fields = ("metric_sources",)

    def open_session(self, path, runtime: dict[str, Any]):
        """The session this step runs: ONNX Runtime (a target's own runtime step overrides it)."""
        return session(path, runtime)

    def run(self, ctx: StepContext, p: EvaluateParams) -> dict[str, Any]:
        import numpy as np

        inputs, labels = load_samples(ctx.inputs["data"])
        sess = self.open_session(ctx.inputs["model"], p.runtime)
        names = [o.name for o in sess.get_outputs()]
        chunks = model_batches(inputs, p.eval.batch_size, session_fixed_batch(sess))
        parts: list[list[Any]] = [[] for _ in names]
        for feed, n in ctx.track(chunks, len(chunks), "evaluate"):
            for i, out in enumerate(sess.run(None, feed)):
                parts[i].append(out[:n])
        outputs = {name: np.concatenate(p_) for name, p_ in zip(names, parts)}
        first = outputs[names[0]]
        if not np.isfinite(first).all():
            bad = int((~np.isfinite(first)).any(axis=tuple(range(1, first.ndim))).sum()) if first.ndim > 1 else 1
            raise BadInput(f"the model's output {names[0]!r} is NaN or infinite for {bad} of {count(inputs)} "
                           "evaluation samples (damaged weights, or a scheme this model cannot take)", key="model")
        if labels is not None and p.signature.task == "classification":
            classes = int(np.prod(first.shape[1:]))
            if labels.min() < 0 or labels.max() >= classes:
                raise BadInput(f"evaluation labels run from {labels.min()} to {labels.max()}, but the model has "
                               f"{classes} classes (0..{classes - 1})", key="data.y_key")
        # Samples keep their input names; outputs are saved the same way, keyed by output name.
        save_samples(ctx.out("outputs"), outputs)
        metrics = {"samples": count(inputs), "task": p.signature.task,
                   "scores": scores(p.signature.task, first, labels, load_pairs(ctx.inputs["data"]))}
        if p.eval.metrics:  # every output, not only the first the built-in metrics read (a detector's boxes too)
            metrics["user"] = user_scores(p.eval.metrics, outputs, labels)
        ctx.out("metrics").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        return metrics
