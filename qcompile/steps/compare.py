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
from .metrics import fidelity

# gate key -> (metric, "max" drop of a score | "min" of a fidelity metric)
GATES = {"max_accuracy_drop": ("top1", "drop"), "min_top1_agreement": ("top1_agreement", "min"),
         "min_cosine": ("cosine_mean", "min")}


class CompareParams(StepParams):
    task: Task
    output: str
    reference: str
    variant: str


@register
class CompareOutputs(Step):
    """Fidelity of a variant's outputs to the reference's, and how much each task score dropped."""

    kind = "compare.outputs"
    Params = CompareParams
    inputs = ("reference_outputs", "reference_metrics", "outputs", "metrics")
    outputs = {"comparison": "comparison.json"}
    libraries = ("numpy",)

    def run(self, ctx: StepContext, p: CompareParams) -> dict[str, Any]:
        ref, _ = load_samples(ctx.inputs["reference_outputs"])
        out, _ = load_samples(ctx.inputs["outputs"])
        ref_scores = json.loads(ctx.inputs["reference_metrics"].read_text())["scores"]
        scores = json.loads(ctx.inputs["metrics"].read_text())["scores"]
        drop = None
        if ref_scores is not None and scores is not None:
            drop = {k: round(ref_scores[k] - scores[k], 6) for k in ref_scores if k in scores}
        result = {"reference": p.reference, "variant": p.variant,
                  "fidelity": fidelity(p.task, ref[p.output], out[p.output]),
                  "scores": {p.reference: ref_scores, p.variant: scores}, "drop": drop}
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
