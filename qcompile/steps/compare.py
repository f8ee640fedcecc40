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
from .user_metrics import user_drops

# gate key -> (metric, "max" drop of a score | "min" of a fidelity metric)
GATES = {"max_accuracy_drop": ("top1", "drop"), "max_top5_drop": ("top5", "drop"),
         "max_correlation_drop": ("spearman", "drop"),
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


def unmeasurable_gate(gate: dict[str, Any], task: str, labels: bool, pairs: bool = False) -> tuple[str, str] | None:
    """(gate key, why) for the first gate set in ``gate`` that this build cannot evaluate, else None.

    A gate that cannot be evaluated would otherwise pass silently: it is bad input, found at plan time.
    """
    scores, fid = MEASURES[task]
    for key, limit in sorted(gate.items()):
        if limit is None or key not in GATES:
            continue
        metric, how = GATES[key]
        if how == "drop" and metric not in scores:
            what = "correlation with human scores" if metric == "spearman" else f"{metric} accuracy"
            return key, f"a {task} model has no {what}; set eval.{key}=null"
        if how == "drop" and task == "embedding" and not pairs:
            return key, (f"the data has no scored pairs (data.scores or data.pairs), so the correlation cannot "
                         f"be compared; set eval.{key}=null (eval.min_cosine judges without them)")
        if how == "drop" and task != "embedding" and not labels:
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
    higher_is_better: dict[str, bool] = {}  # per user metric (eval.metrics): which way is a drop


@register
class CompareOutputsStep(Step):
    """Fidelity of a variant's outputs to the reference's, and how much each task score dropped."""

    kind = "compare.outputs"
    Params = CompareParams
    # 2: confidence interval of the top-1 drop; 3: correlation drops of embedding models; 4: user metrics; 5: the
    # fidelity of one-value outputs (task other) over the whole column
    version = 5
    inputs = ("reference_outputs", "reference_metrics", "outputs", "metrics", "data")
    outputs = {"comparison": "comparison.json"}
    libraries = ("numpy",)

    def run(self, ctx: StepContext, p: CompareParams) -> dict[str, Any]:
        ref, _ = load_samples(ctx.inputs["reference_outputs"])
        out, _ = load_samples(ctx.inputs["outputs"])
        ref_metrics = json.loads(ctx.inputs["reference_metrics"].read_text())
        var_metrics = json.loads(ctx.inputs["metrics"].read_text())
        ref_scores, scores = ref_metrics["scores"], var_metrics["scores"]
        drop, ci = None, None
        if ref_scores is not None and scores is not None:
            drop = {k: round(ref_scores[k] - scores[k], 6) for k in ref_scores if k in scores}
            if p.task == "classification":
                _, labels = load_samples(ctx.inputs["data"])
                ci = drop_interval(ref[p.output], out[p.output], labels)
        result = {"reference": p.reference, "variant": p.variant,
                  "fidelity": fidelity(p.task, ref[p.output], out[p.output]),
                  "scores": {p.reference: ref_scores, p.variant: scores}, "drop": drop, "drop_ci95": ci}
        if p.higher_is_better:
            ref_user, user = ref_metrics.get("user") or {}, var_metrics.get("user") or {}
            result.update(user={p.reference: ref_user, p.variant: user}, higher_is_better=p.higher_is_better,
                          user_drop=user_drops(ref_user, user, p.higher_is_better))
        ctx.out("comparison").write_text(json.dumps(result, indent=2, sort_keys=True))
        return result

    def check(self, result: dict[str, Any], gate: dict[str, Any]) -> str | None:
        # One unit throughout: accuracies and agreement in percent, drops in points, the limit in the same unit
        # next to the recipe key's own value (a fraction), so "0.01" is never printed as "1.00" unexplained.
        problems = []
        problems += _user_gate_problems(result, gate.get("gates") or {})
        for key, limit in sorted(gate.items()):
            if limit is None or key not in GATES:
                continue
            metric, how = GATES[key]
            if how == "drop":
                drop = (result.get("drop") or {}).get(metric)
                if drop is None:
                    continue  # no labels: accuracy cannot drop; fidelity gates judge instead
                if drop > limit:
                    problems.append(_drop_problem(result, key, metric, drop, limit))
            else:
                value = result["fidelity"].get(metric)
                if value is None:
                    problems.append(f"eval.{key}={limit:g} asks for the {LABELS[metric]}, which this model's task "
                                    "does not measure")
                elif not value >= limit:
                    problems.append(_fidelity_problem(result, key, metric, value, limit))
        return "; ".join(problems) or None


# How messages name each metric.
LABELS = {"top1": "top-1", "top5": "top-5", "top1_agreement": "top-1 agreement", "top5_overlap": "top-5 overlap",
          "cosine_mean": "mean output cosine", "spearman": "Spearman correlation", "pearson": "Pearson correlation"}
_CORRELATIONS = {"spearman", "pearson"}  # drops in correlation units, not accuracy points
_PERCENT = {"top1_agreement", "top5_overlap"}  # fidelity metrics that are fractions of samples; cosine is not


def _decimals(value: float, limit: float, scale: float, fewest: int) -> int:
    """The fewest decimals (at least ``fewest``) that print ``value`` and ``limit`` apart, so a value just past
    the limit never reads as equal to it ("1.00 points below ... allows 1.00 point")."""
    for d in range(fewest, 9):
        if f"{value * scale:.{d}f}" != f"{limit * scale:.{d}f}":
            return d
    return 8


def points(fraction: float, decimals: int = 2) -> str:
    """A fraction of samples as accuracy points: 0.01 -> "1.00 point", 0.025 -> "2.50 points"."""
    text = f"{fraction * 100:.{decimals}f}"
    return f"{text} point" + ("" if float(text) == 1 else "s")


def _drop_problem(result: dict[str, Any], key: str, metric: str, drop: float, limit: float) -> str:
    variant, ref = result["variant"], result["reference"]
    scores = result["scores"]
    if metric in _CORRELATIONS:
        d = _decimals(drop, limit, 1, 4)
        return (f"{variant} {LABELS[metric]} with the human scores {scores[variant][metric]:.{d}f} is {drop:.{d}f} "
                f"below {ref}'s {scores[ref][metric]:.{d}f}; eval.{key}={limit:g} allows {limit:.{d}f}")
    d = _decimals(drop, limit, 100, 2)
    return (f"{variant} {LABELS[metric]} accuracy {scores[variant][metric] * 100:.{d}f}% is {drop * 100:.{d}f} "
            f"points below {ref}'s {scores[ref][metric] * 100:.{d}f}%; eval.{key}={limit:g} allows "
            f"{points(limit, d)}")


def _fidelity_problem(result: dict[str, Any], key: str, metric: str, value: float, limit: float) -> str:
    if metric in _PERCENT:
        d = _decimals(value, limit, 100, 2)
        shown, least = f"{value * 100:.{d}f}%", f"{limit * 100:.{d}f}%"
    else:
        d = _decimals(value, limit, 1, 4)
        shown, least = f"{value:.{d}f}", f"{limit:.{d}f}"
    return (f"{result['variant']} {LABELS[metric]} with {result['reference']} is {shown}; eval.{key}={limit:g} "
            f"asks at least {least}")


def _user_gate_problems(result: dict[str, Any], gates: dict[str, Any]) -> list[str]:
    """What breaks the user metrics' gates (``eval.gates.<name>``), in the style of the built-in gates' messages:
    the variant's value, the reference's, the recipe key with its limit. A drop respects higher_is_better."""
    problems = []
    variant, ref = result["variant"], result["reference"]
    user = result.get("user") or {}
    for name, g in sorted(gates.items()):
        value, base = (user.get(variant) or {}).get(name), (user.get(ref) or {}).get(name)
        if value is None:  # the plan refuses gates on undefined metrics: only a result from before them lands here
            problems.append(f"eval.gates.{name} asks for the metric {name}, which this build did not measure")
            continue
        higher = (result.get("higher_is_better") or {}).get(name, True)
        drop = (result.get("user_drop") or {}).get(name)
        if g.get("max_drop") is not None and drop is not None and drop > g["max_drop"]:
            limit = g["max_drop"]
            d = _decimals(drop, limit, 1, 4)
            way = "below" if higher else "above"
            problems.append(f"{variant} {name} {value:.{d}f} is {drop:.{d}f} {way} {ref}'s {base:.{d}f} "
                            f"({'higher' if higher else 'lower'} is better); eval.gates.{name}.max_drop={limit:g} "
                            f"allows {limit:.{d}f}")
        if g.get("min") is not None and not value >= g["min"]:
            d = _decimals(value, g["min"], 1, 4)
            problems.append(f"{variant} {name} is {value:.{d}f} ({ref}: {base:.{d}f}); "
                            f"eval.gates.{name}.min={g['min']:g} asks at least {g['min']:.{d}f}")
        if g.get("max") is not None and not value <= g["max"]:
            d = _decimals(value, g["max"], 1, 4)
            problems.append(f"{variant} {name} is {value:.{d}f} ({ref}: {base:.{d}f}); "
                            f"eval.gates.{name}.max={g['max']:g} allows at most {g['max']:.{d}f}")
    return problems


def drop_interval_note(result: dict[str, Any], limit: float | None) -> str | None:
    """A note for a compare result whose top-1 drop's 95% interval contains the gate's limit: on this evaluation
    set the verdict could have gone either way, and more evaluation samples would settle it.

    None when the gate is unset, the result has no interval, or the interval lies wholly on one side of the
    limit: then the verdict stands whatever the sampling noise (an 89-point drop known to +-6 points fails).
    """
    ci, drop = result.get("drop_ci95"), (result.get("drop") or {}).get("top1")
    if limit is None or not ci or drop is None or not ci[0] <= limit <= ci[1]:
        return None
    verdict = "failed" if drop > limit else "passed"
    return (f"the top-1 drop of {drop * 100:.2f} points has a 95% interval of {ci[0] * 100:.2f} to "
            f"{ci[1] * 100:.2f} points on this evaluation set, which contains eval.max_accuracy_drop={limit:g} "
            f"({points(limit)}): the gate {verdict}, but could have gone either way; more data.eval_samples "
            "would settle it")
