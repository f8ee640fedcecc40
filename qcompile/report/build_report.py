"""Assemble report.json and report.md for one build from the step outcomes and the plan's variants.

Variants are named by their scheme (``fp32``, ``int8``, ``int8_dynamic``...), never by a literal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..graph import StepOutcome
from .pareto import point_label, point_order
from .search_report import markdown as search_markdown
from .user_metrics import user_markdown

# 2: metrics, fidelity, accuracy_drop and speedup_p50 per variant name; 3: p50_ci per batch size, speedup_verdict;
# 4: deployable, next_steps; 5: user metrics (metrics[variant]["user"], user_metric_drop); 6: speed-ups from paired
# timings (speedup_p50 is the pair's median ratio, speedup_ci its interval), busy
REPORT_VERSION = 6

FASTER, SLOWER, NO_DIFFERENCE = "faster", "slower", "no measurable difference"


def _speedup(ref: dict[str, Any], lat: dict[str, Any]) -> dict[str, float]:
    return {bs: round(r["p50"] / lat[bs]["p50"], 3) for bs, r in ref.items() if bs in lat and lat[bs]["p50"] > 0}


def speed_verdict(reference: dict[str, Any], variant: dict[str, Any]) -> str | None:
    """Whether ``variant`` is faster or slower than ``reference`` beyond the noise, from their p50 CIs (the
    ``latency_ms[bs]`` entries of two variants). Only for a plan without a ``speedup`` node
    (every compiled plan has one): two separately timed p50s compare two moments of the machine.

    "faster" when the variant's CI lies wholly below the reference's, "slower" when wholly above, "no measurable
    difference" when they overlap; None when either has no CI (latency.json written before CIs were measured).
    """
    ref_ci, var_ci = reference.get("p50_ci"), variant.get("p50_ci")
    if not ref_ci or not var_ci:
        return None
    if var_ci[1] < ref_ci[0]:
        return FASTER
    if var_ci[0] > ref_ci[1]:
        return SLOWER
    return NO_DIFFERENCE


def _times(x: float) -> str:
    # Two decimals, unless that would print a real (CI-separated) difference as "1.00x".
    return f"{x:.2f}x" if round(x, 2) != 1 else f"{x:.3f}x"


def speed_text(ratio: float, verdict: str | None, reference: str | None = None) -> str:
    """How a variant's p50 compares with the reference's, for people: "2.31x faster", "1.40x slower" (the
    inverse of the ratio, never "0.71x faster") or "no measurable difference", each followed by "than/from
    ``reference``" when given. Without a verdict (no CI) the bare ratio: "0.84x the speed of fp32 (no CI)".

    ``ratio`` is the reference's p50 over the variant's (``speedup_p50``): above 1 the variant is quicker.
    """
    if verdict == FASTER:
        return f"{_times(ratio)} faster" + (f" than {reference}" if reference else "")
    if verdict == SLOWER:
        return f"{_times(1 / ratio)} slower" + (f" than {reference}" if reference else "")
    if verdict == NO_DIFFERENCE:
        return NO_DIFFERENCE + (f" from {reference}" if reference else "")
    return f"{_times(ratio)} the speed" + (f" of {reference}" if reference else "") + " (no CI)"


def _latency_points(result: dict[str, Any], field: str = "p50") -> dict[str, Any]:
    """The per-batch-size entries of a benchmark or speed-up result (not its notes or host_load), by batch then
    length."""
    return {k: result[k] for k in sorted(result, key=point_order) if isinstance(result[k], dict) and field in result[k]}


def make_report(lock: dict[str, Any], outcomes: list[StepOutcome], artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """report.json content: steps, metrics per variant, fidelity, speed-ups, gates and artifacts."""
    by_name = {o.name: o for o in outcomes}
    sizes = {a["path"].removeprefix("artifacts/"): a["size_bytes"] for a in artifacts}
    variants = lock["variants"]
    reference = next(name for name, v in variants.items() if v["reference"])
    metrics, fidelity, drops, speedups, verdicts, schemes, corr_drops = {}, {}, {}, {}, {}, {}, {}
    user_drops: dict[str, dict[str, float]] = {}
    higher: dict[str, bool] = {}
    for name, v in variants.items():
        ev = by_name[v["nodes"]["evaluate"]].result
        lat = by_name[v["nodes"]["benchmark"]].result
        scores = ev.get("scores") or {}
        metrics[name] = {"size_bytes": sizes.get(v["artifact"]), "accuracy": scores.get("top1"),
                         "top5": scores.get("top5"), "spearman": scores.get("spearman"),
                         "pearson": scores.get("pearson"), "latency_ms": _latency_points(lat),
                         "host_load": lat.get("host_load")}
        if ev.get("user") is not None:  # eval.metrics: the user's own, by name
            metrics[name]["user"] = ev["user"]
        schemes[name] = v["scheme"]
        if "compare" in v["nodes"]:
            cmp = by_name[v["nodes"]["compare"]].result
            fidelity[name] = cmp["fidelity"]
            drops[name] = (cmp.get("drop") or {}).get("top1")
            corr_drops[name] = (cmp.get("drop") or {}).get("spearman")
            if cmp.get("user_drop") is not None:
                user_drops[name] = cmp["user_drop"]
                higher = cmp.get("higher_is_better") or {}
    speedup_ci: dict[str, dict[str, list[float]]] = {}
    for name, v in variants.items():
        if name == reference:
            continue
        if "speedup" in v["nodes"]:  # timed as a pair: the ratio, its interval and its verdict come from there
            pair = _latency_points(by_name[v["nodes"]["speedup"]].result, "speedup")
            speedups[name] = {bs: r["speedup"] for bs, r in pair.items()}
            verdicts[name] = {bs: r["verdict"] for bs, r in pair.items()}
            speedup_ci[name] = {bs: r["ci"] for bs, r in pair.items()}
        else:
            ref_lat, lat = metrics[reference]["latency_ms"], metrics[name]["latency_ms"]
            speedups[name] = _speedup(ref_lat, lat)
            verdicts[name] = {bs: speed_verdict(ref_lat[bs], lat[bs]) for bs in speedups[name]}
    busy = {o.name: o.result["host_load"]["busy"] for o in outcomes
            if isinstance(o.result.get("host_load"), dict) and o.result["host_load"].get("busy")}
    quantized = next((o.result for o in outcomes if o.kind.startswith("quantize.")), {})
    gates = [{"step": o.name, "message": o.gate_error} for o in outcomes if o.gate_error]
    notes = [f"{o.name}: {n}" for o in outcomes for n in o.result.get("notes", [])]
    return {
        "report_version": REPORT_VERSION,
        "build_id": lock["build_id"],
        "recipe": lock["recipe"].get("name"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "gate_failed" if gates else "ok",
        # The bundle is built before the gates are judged (a cached step), so it exists either way: this says
        # whether it is fit to deploy. ``gates`` lists what failed; ``next_steps`` (set by the build) what to try.
        "deployable": not gates,
        "steps": [{"name": o.name, "kind": o.kind, "key": o.key, "status": o.status,
                   "seconds": round(o.seconds, 3), "peak_mb": o.peak_mb} for o in outcomes],
        "reference": reference,
        "variants": list(variants),
        "schemes": schemes,
        "target": {**lock["recipe"]["target"], **{k: quantized[k] for k in ("isa", "activation_type")
                                                  if k in quantized}},
        "metrics": metrics,
        "accuracy_drop": drops,
        "correlation_drop": corr_drops,
        # How much each user metric got worse per variant (a rise, for a lower-is-better metric).
        "user_metric_drop": user_drops,
        "user_metric_higher_is_better": higher,
        "fidelity": fidelity,
        "eval_samples": by_name[variants[reference]["nodes"]["evaluate"]].result.get("samples"),
        # Per variant and batch point: the speed-up over the reference (reference time / variant time), from the
        # two timed as a pair, its 95% interval and the verdict (faster / slower only when the interval excludes 1).
        "speedup_p50": speedups,
        "speedup_ci": speedup_ci,
        "speedup_verdict": verdicts,
        # Measurement steps that ran while the machine was busy, and why (their figures are less trustworthy).
        "busy": busy,
        "gates": gates,
        "notes": notes,
        # A target's own facts: where latency was measured, mobile usability coverage per converted variant.
        "measured_on": next((o.result["measured_on"] for o in outcomes if o.result.get("measured_on")), None),
        "usability": {o.name: o.result["usability"] for o in outcomes if o.result.get("usability")},
        "artifacts": artifacts,
    }


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v * 100:.2f}%" if pct else (f"{v:.4g}" if isinstance(v, float) else str(v))


def _size(n: int | None) -> str:
    if not n:
        return "–"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.1f} KiB"


def _latency_cell(lat: dict[str, Any] | None) -> str:
    if not lat or lat.get("p50") is None:
        return "–"
    cell = _fmt(lat["p50"])
    if lat.get("p50_ci"):
        lo, hi = lat["p50_ci"]
        cell += f" [{_fmt(lo)}, {_fmt(hi)}]" + (" †" if lat.get("ci_reached") is False else "")
    return cell


def _load_line(report: dict[str, Any]) -> str | None:
    loads = {n: report["metrics"][n].get("host_load") for n in report["variants"]}
    loads = {n: h for n, h in loads.items() if h and h.get("loadavg_max") is not None}
    if not loads:
        return None
    cores = next(iter(loads.values())).get("cores")
    line = ("Load while timing (1-minute load average before → peak, " + f"{cores} cores): "
            + ", ".join(f"{n} {h['loadavg_before']:.2f} → {h['loadavg_max']:.2f}" for n, h in loads.items()) + ".")
    if report.get("busy"):
        line = ("**Measured on a busy machine**: " + "; ".join(f"{n}: {why}" for n, why in report["busy"].items())
                + ". Latencies are less trustworthy than on a quiet machine; the speed-up verdicts compare runs "
                "timed together. `qcompile build --remeasure --quiet-below LOAD` waits for a quieter machine.\n\n"
                + line)
    return line


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """report.md: the same facts as report.json, laid out for a person."""
    m, ref = report["metrics"], report["reference"]
    batches = list(m[ref]["latency_ms"])
    lines = [f"# qcompile build `{report['build_id']}` — {report['recipe']}", ""]
    lines += _not_deployable(report)  # first: nobody should read the tables below as a deployable result
    lines += [f"Status: **{report['status']}**", ""]
    target = report["target"]
    lines += [f"Target: {target.get('kind')}" + "".join(f", {k} {target[k]}" for k in ("isa", "activation_type")
                                                        if k in target), ""]
    if report.get("measured_on"):
        lines += [f"Measured on {report['measured_on']}.", ""]
    # An embedding model is judged on how its cosines rank human-scored pairs, a classifier on accuracy.
    # A model without built-in scores (regression...) shows none: its own metrics have their table below.
    correlated = any(m[n].get("spearman") is not None for n in report["variants"])
    scored = correlated or any(m[n].get("accuracy") is not None for n in report["variants"]) \
        or not report.get("user_metric_higher_is_better")
    quality = ("Spearman", "Pearson") if correlated else ("top-1", "top-5") if scored else ()
    lines += ["## Models", "", "| variant | size | " + "".join(f"{q} | " for q in quality) +
              " | ".join(f"p50 ms [95% CI] ({point_label(bs)})" for bs in batches) + " |",
              "|---|---:|" + "---:|" * (len(quality) + len(batches))]
    for name in report["variants"]:
        v = m[name]
        lat = " | ".join(_latency_cell(v["latency_ms"].get(bs)) for bs in batches)
        scores = (_fmt(v.get("spearman")), _fmt(v.get("pearson"))) if correlated else \
            (_fmt(v["accuracy"], pct=True), _fmt(v["top5"], pct=True)) if scored else ()
        lines.append(f"| {name} | {_size(v['size_bytes'])} | " + "".join(f"{c} | " for c in scores) + f"{lat} |")
    if any(lat.get("ci_reached") is False for n in report["variants"] for lat in m[n]["latency_ms"].values()):
        lines += ["", "† the confidence interval did not narrow to the recipe's bench.ci_width within "
                  "bench.max_seconds (see the notes)."]
    load = _load_line(report)
    if load:
        lines += ["", load]
    # What a scheme means on this kind of target (fp16 on an x86 CPU: smaller, not faster), under the table.
    lines += [f"\n{name}: {s['note']}" for name, s in (report.get("schemes") or {}).items()
              if (s or {}).get("note")]
    lines.append("")
    for name, fid in report["fidelity"].items():
        drop = report["accuracy_drop"].get(name)
        if drop is not None:
            lines.append(f"{name}: top-1 accuracy drop {drop * 100:.2f} points on {report['eval_samples']} "
                         "held-out samples.")
        corr = (report.get("correlation_drop") or {}).get(name)
        if corr is not None:
            lines.append(f"{name}: Spearman correlation with the human scores {abs(corr):.4f} "
                         f"{'below' if corr >= 0 else 'above'} {ref}'s (pairs of {report['eval_samples']} texts).")
        parts = [f"top-1 agreement {fid['top1_agreement'] * 100:.2f}%"] if "top1_agreement" in fid else []
        if "top5_overlap" in fid:
            parts.append(f"top-5 overlap {fid['top5_overlap'] * 100:.2f}%")
        parts.append(f"output cosine mean {fid['cosine_mean']:.5f} (min {fid['cosine_min']:.5f})")
        lines.append(f"{name} vs {ref}: " + ", ".join(parts) + ".")
        sp = report["speedup_p50"].get(name) or {}
        verdicts = (report.get("speedup_verdict") or {}).get(name) or {}
        cis = (report.get("speedup_ci") or {}).get(name) or {}
        if sp and cis:
            lines.append(f"{name} speed-up over {ref} (timed as a pair, 95% CI): "
                         + ", ".join(f"{point_label(b)}: {speed_text(s, verdicts.get(b))} "
                                     f"[{cis[b][0]:.2f}x, {cis[b][1]:.2f}x]" for b, s in sp.items() if b in cis)
                         + ".")
        elif sp:
            lines.append(f"{name} latency vs {ref} (p50): "
                         + ", ".join(f"{point_label(b)}: {speed_text(s, verdicts.get(b))}" for b, s in sp.items())
                         + ".")
    lines += user_markdown(report)
    for n in report["notes"]:
        lines.append(f"\nNote: {n}")
    lines += search_markdown(report)
    lines += ["", "## Steps", "", "| step | kind | status | seconds | peak MB | key |", "|---|---|---|---:|---:|---|"]
    for s in report["steps"]:
        peak = f"{s['peak_mb']:.0f}" if s.get("peak_mb") is not None else ""
        lines.append(f"| {s['name']} | {s['kind']} | {s['status']} | {s['seconds']:.2f} | {peak} | "
                     f"`{(s['key'] or '')[:12]}` |")
    lines += ["", "## Artifacts", "", "| path | bytes | sha256 |", "|---|---:|---|"]
    for a in report["artifacts"]:
        lines.append(f"| {a['path']} | {a['size_bytes']} | `{a['sha256'][:16]}` |")
    path.write_text("\n".join(lines) + "\n")


def _bundles(report: dict[str, Any]) -> list[str]:
    return [a["path"] for a in report["artifacts"] if a["path"].endswith(".zip") and a["step"] == "package"]


def _not_deployable(report: dict[str, Any]) -> list[str]:
    """report.md's opening section for a build that failed a gate: the gates, and what to try next."""
    if not report["gates"]:
        return []
    bundle = " and ".join(f"`{b}`" for b in _bundles(report)) or "its bundle"
    lines = ["## NOT DEPLOYABLE: gate failed", "",
             f"This build failed its quality gate: {bundle} is kept to inspect what went wrong, not to deploy.", ""]
    lines += [f"- **{g['step']}**: {g['message']}" for g in report["gates"]]
    steps = report.get("next_steps") or []
    if steps:
        lines += ["", "Next, try one of these overrides (likeliest first):", ""]
        for s in steps:
            override, sep, why = s.partition(" — ")
            lines.append(f"- `{override}` — {why}" if sep else f"- {s}")
    return lines + [""]


GATE_NOTICE = "GATE_FAILED.txt"


def write_gate_notice(report: dict[str, Any], artifacts: Path) -> None:
    """Write ``GATE_FAILED.txt`` beside the artifacts of a build that failed a gate (nothing for one that passed).

    The bundle keeps its name and bytes: it is a cached step's output, built before the gates are judged, and the
    lockfile, report and ``qcompile checkout`` name it ``bundle.zip``; renaming only the published copy would make
    them disagree. A file beside it says what anyone listing the folder needs to know, and a script that deploys
    whatever lies there should act on the exit code (3) anyway.
    """
    if not report["gates"]:
        return
    lines = [f"NOT DEPLOYABLE: build {report['build_id']} ({report['recipe']}) failed its quality gate.", "",
             "The bundle here is kept to inspect what went wrong, not to deploy:"]
    lines += [f"  {g['step']}: {g['message']}" for g in report["gates"]]
    if report.get("next_steps"):
        lines += ["", "Next, try:"] + [f"  {s}" for s in report["next_steps"]]
    lines += ["", "Measurements and notes: ../report.md"]
    artifacts.mkdir(parents=True, exist_ok=True)
    (artifacts / GATE_NOTICE).write_text("\n".join(lines) + "\n")
