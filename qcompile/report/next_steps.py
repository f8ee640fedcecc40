"""What to try when a build failed its gate: the overrides that apply to this recipe, each with a word on why.

Read from the recipe as the lockfile holds it (JSON) and the build's report, so ``GateFailed.next_steps``, the CLI's
"next:" lines and report.md give the same advice. Only overrides this qcompile accepts are offered: a quant kind or
field missing from the schema (QAT, the accuracy-aware fallback, until they ship) is left out rather than
suggested and then refused as bad input.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

# Model kinds that are torch modules (they provide the torch_model port: kinds/model/_torch.py) and data kinds with
# a training split (samples.train): quantization-aware training needs both. A test keeps these in step with the
# kind modules, since the ports are only known once a recipe compiles.
TORCH_MODELS = frozenset({"mnist_cnn", "torchvision", "factory", "efficientnet_lite"})
TRAIN_DATA = frozenset({"mnist", "digits"})
CLIPPING_PERCENTILE = 99.9  # below this, percentile calibration saturates a share of every activation's values
FEW_SAMPLES = 256  # the static quant default; fewer may miss an activation's real range
WORST_NODES = 3  # how many of a sensitivity table's worst nodes to suggest keeping in float

# When each calibration method helps, for the line that suggests it.
_METHOD_WHY = {
    "minmax": "each activation's full observed range, nothing clipped; the safe choice with few calibration samples",
    "entropy": "clips where the KL divergence from the float distribution is least; suits long-tailed activations "
               "and wants a few hundred samples",
    "percentile": "clips only the rarest values (the top 0.001% at percentile 99.999); suits activations with a few "
                  "outliers",
}

Suggestion = tuple[tuple[str, ...], str]  # (overrides, why)


def next_steps(recipe_json: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """What to try for this recipe when a gate failed (empty when none did), most likely first.

    ``recipe_json`` is the recipe as the lockfile holds it (``lock["recipe"]``); ``report`` is report.json's
    content, whose ``gates`` say whether a gate failed and whose ``sensitivity`` table, when present
    (``{"nodes": [{"name", "op_type", "sqnr_db"}, ...]}``, worst first), names nodes worth keeping in float.
    Each line is the override as typed in a shell (quoted where the shell needs it), " — ", and why.
    """
    if not report.get("gates"):
        return []
    return [" ".join(shlex.quote(o) for o in overrides) + f" — {why}"
            for overrides, why in _suggestions(recipe_json, report)]


def _suggestions(recipe: dict[str, Any], report: dict[str, Any]) -> list[Suggestion]:
    quant = recipe.get("quant") or {}
    kind = quant.get("kind")
    if kind in (None, "none"):
        return []  # nothing was quantized: no variant to compare, nothing to change here
    cal = quant.get("calibration") if isinstance(quant.get("calibration"), dict) else None
    method = cal.get("method") if cal else None
    clipping = method == "percentile" and _number(cal.get("percentile"), 100) < CLIPPING_PERCENTILE
    out: list[Suggestion] = []
    if clipping:
        # The likeliest cause comes first: ranges clipped well inside the values the model produces.
        p = _number(cal.get("percentile"), 100)
        out.append((("quant.calibration.percentile=99.99",),
                    f"percentile {p:g} clips every activation at its {p:g}th percentile, saturating "
                    f"{100 - p:.3g}% of its values; 99.99 clips only rare outliers"))
        out.append((("quant.calibration.method=minmax",), _METHOD_WHY["minmax"]))
    target = report.get("target") or {}
    if (target.get("activation_type") == "uint8" and target.get("isa") in ("avx2", "x86")
            and quant.get("reduce_range") is False):
        # ORT's own advice (quantize_static's docstring) for x86 without VNNI; measured on digits_mobile_ptq.
        out.append((("quant.reduce_range=true",),
                    "this CPU has no VNNI: ORT's u8s8 kernels add pairs of uint8 x int8 products in 16 bits, which "
                    "saturate with full-range weights; 7-bit weights avoid it"))
    if _offered(kind, "fallback") and not (quant.get("fallback") or {}).get("enabled"):
        out.append((("quant.fallback.enabled=true",),
                    "accuracy-aware fallback: keeps the most sensitive nodes in float until the gate passes"))
    excluded = list((quant.get("exclude") or {}).get("names") or [])
    worst = _worst_nodes(report, excluded)
    if worst and "exclude" in quant:
        names = excluded + [m for n in worst for m in (n.get("nodes") or [n["name"]]) if m not in excluded]
        listed = ", ".join(n["name"] + _sensitivity_text(n) for n in worst)
        out.append(((f"quant.exclude.names={_hydra_list(names)}",),
                    f"keeps in float the {len(worst)} node{'s' if len(worst) > 1 else ''} quantization hurts most "
                    f"(sensitivity table): {listed}"))
    if quant.get("per_channel") is False:
        out.append((("quant.per_channel=true",), "one weight scale per output channel, so channels with small "
                    "weights keep their precision (depthwise convolutions need it most)"))
    if kind == "dynamic" and _offered("static"):
        out.append((("quant=int8_static",), "activation ranges calibrated ahead of time on samples, instead of "
                    "measured on each batch at run time"))
    if cal:
        for other in ("minmax", "entropy", "percentile"):
            if other == method or (clipping and other == "minmax"):
                continue
            overrides = (f"quant.calibration.method={other}",)
            if other == "percentile" and _number(cal.get("percentile"), 100) < CLIPPING_PERCENTILE:
                overrides += ("quant.calibration.percentile=99.99",)  # the recipe's own value would clip
            out.append((overrides, _METHOD_WHY[other]))
        n = cal.get("samples")
        if isinstance(n, int) and n < FEW_SAMPLES:
            out.append(((f"quant.calibration.samples={max(FEW_SAMPLES, 4 * n)}",),
                        f"{n} calibration samples may miss the range activations take on other inputs"))
    if (kind != "qat" and _offered("qat") and (recipe.get("model") or {}).get("kind") in TORCH_MODELS
            and (recipe.get("data") or {}).get("kind") in TRAIN_DATA):
        out.append((("quant=qat",), "quantization-aware training: fine-tunes the model with int8 simulated on "
                    "the data's training split (a slower build)"))
    return out


def _offered(kind: str, field: str | None = None) -> bool:
    """Whether this qcompile's schema has quant kind ``kind`` (and, given ``field``, that field in it)."""
    from ..kinds import kinds

    section = kinds("quant").get(kind)
    return section is not None and (field is None or field in section.model_fields)


def _number(value: Any, default: float) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


def _worst_nodes(report: dict[str, Any], excluded: list[str]) -> list[dict[str, Any]]:
    """The first nodes of the report's sensitivity table (worst first) not excluded already; none when the report
    has no table or one of another shape."""
    table = report.get("sensitivity")
    nodes = table.get("nodes") if isinstance(table, dict) else None
    if not isinstance(nodes, list):
        return []
    named = [n for n in nodes if isinstance(n, dict) and isinstance(n.get("name"), str) and n["name"]]
    return [n for n in named if n["name"] not in excluded][:WORST_NODES]


def _sensitivity_text(node: dict[str, Any]) -> str:
    facts = [str(node["op_type"])] if node.get("op_type") else []
    sqnr = node.get("local_sqnr_db")
    if isinstance(sqnr, (int, float)) and not isinstance(sqnr, bool):
        facts.append(f"SQNR {sqnr:.1f} dB")
    return f" ({', '.join(facts)})" if facts else ""


_HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}


def _hydra_list(names: list[str]) -> str:
    """A Hydra override list of node names: bare where Hydra takes them so (``/features/features.3/Conv``),
    double-quoted otherwise (a space, comma, bracket or quote in the name, or a name Hydra would read as a
    number or a boolean)."""
    def item(name: str) -> str:
        # Bare only where Hydra reads a string: not a number (12, 1.5), nor true/false/null/nan/inf.
        if re.fullmatch(r"[A-Za-z_/][A-Za-z0-9_./\-]*", name) and name.lower() not in _HYDRA_WORDS:
            return name
        # Hydra unescapes backslashes only before a quote or at the end of a quoted string: double those alone.
        return '"' + re.sub(r'(\\*)("|$)', lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""), name) + '"'

    return "[" + ",".join(item(n) for n in names) + "]"
