"""Compare a variant with the reference from their evaluation artifacts: fidelity, score drops and gates.

Cheap and pure: it reads two evaluations and runs no model, so a new gate or a re-measured variant never
re-evaluates FP32.
"""

from __future__ import annotations

import json
from typing import Any

from ..signature import Task
from .arrays import load_samples
from .base import Step, StepContext, StepParams, register
from .metrics import MEASURES, fidelity

# gate key -> (metric, "max" drop of a score | "min" of a fidelity metric)
GATES = {"max_accuracy_drop": ("top1", "drop"), "max_top5_drop": ("top5", "drop"),
         "min_top1_agreement": ("top1_agreement", "min"), "min_top5_overlap": ("top5_overlap", "min"),
         "min_cosine": ("cosine_mean", "min")}


def drop_interval(ref, out, labels) -> list[float]:
    """95% interval of the top-1 accuracy drop from paired per-sample outcomes.

    The variance of the mean paired difference is (b + c) / n^2 - drop^2 / n, with b and c the samples only one
    model gets right; one discordant sample is added so that a small set with none is not read as certain.
    """
    import numpy as np

    n = len(labels)
    right_ref = ref.reshape(n, -1).argmax(1) == labels
    right_out = out.reshape(n, -1).argmax(1) == labels
    drop = float(right_ref.mean() - right_out.mean())
    discordant = int((right_ref != right_out).sum()) + 1
    half = 1.96 * float(np.sqrt(max(discordant / n - drop**2, 0.0) / n))
    return [round(drop - half, 6), round(drop + half, 6)]


def unmeasurable_gate(gate: dict[str, Any], task: str, labels: bool) -> tuple[str, str] | None:
    """(gate key, why) for the first gate set in ``gate`` that this build cannot evaluate, else None.

    A gate that cannot be evaluated would otherwise pass silently: it is bad input, found at plan time.
    """
    scores, fid = MEASURES[task]
    for key, limit in sorted(gate.items()):
        if limit is None or key not in GATES:
            continue
        metric, how = GATES[key]
        if how == "drop" and metric not in scores:
            return key, f"a {task} model has no {metric} accuracy; set eval.{key}=null"
        if how == "drop" and not labels:
            return key, (f"the data has no labels, so accuracy cannot be compared; set eval.{key}=null "
                         "(eval.min_top1_agreement and eval.min_cosine judge without labels)")
        if how == "min" and metric not in fid:
            return key, f"a {task} model has no {metric}; set eval.{key}=null"
    return None


class CompareParams(StepParams):
    task: Task
    output: str
    reference: str
    variant: str


@register
class CompareOutputsStep(Step):
    """Fidelity of a variant's outputs to the reference's, and how much each task score dropped."""

    kind = "compare.outputs"
    Params = CompareParams
    version = 2  # 2: confidence interval of the top-1 drop
    inputs = ("reference_outputs", "reference_metrics", "outputs", "metrics", "data")
    outputs = {"comparison": "comparison.json"}
    libraries = ("numpy",)

    def run(self, ctx: StepContext, p: CompareParams) -> dict[str, Any]:
        ref, _ = load_samples(ctx.inputs["reference_outputs"])
        out, _ = load_samples(ctx.inputs["outputs"])
        ref_scores = json.loads(ctx.inputs["reference_metrics"].read_text())["scores"]
        scores = json.loads(ctx.inputs["metrics"].read_text())["scores"]
        drop, ci = None, None
        if ref_scores is not None and scores is not None:
            drop = {k: round(ref_scores[k] - scores[k], 6) for k in ref_scores if k in scores}
            _, labels = load_samples(ctx.inputs["data"])
            ci = drop_interval(ref[p.output], out[p.output], labels)
        result = {"reference": p.reference, "variant": p.variant,
                  "fidelity": fidelity(p.task, ref[p.output], out[p.output]),
                  "scores": {p.reference: ref_scores, p.variant: scores}, "drop": drop, "drop_ci95": ci}
        ctx.out("comparison").write_text(json.dumps(result, indent=2, sort_keys=True))
        return result

    def check(self, result: dict[str, Any], gate: dict[str, Any]) -> str | None:
        problems = []
        for key, limit in sorted(gate.items()):
            if limit is None or key not in GATES:
                continue
            metric, how = GATES[key]
            if how == "drop":
                drop = (result.get("drop") or {}).get(metric)
                if drop is None:
                    continue  # no labels: accuracy cannot drop; fidelity gates judge instead
                if drop > limit:
                    s = result["scores"]
                    problems.append(f"{result['variant']} {metric} accuracy {s[result['variant']][metric]:.4f} is "
                                    f"{drop * 100:.2f} points below {result['reference']} "
                                    f"{s[result['reference']][metric]:.4f}; eval.{key} allows {limit * 100:.2f}")
            else:
                value = result["fidelity"].get(metric)
                if value is None:
                    problems.append(f"eval.{key} asks for {metric}, which this model's task does not measure")
                elif not value >= limit:
                    problems.append(f"{result['variant']} {metric} with {result['reference']} is {value:.4f}; "
                                    f"eval.{key} asks at least {limit}")
        return "; ".join(problems) or None
