"""Assemble report.json and report.md for one build from the step outcomes and the plan's variants.

Variants are named by their scheme (``fp32``, ``int8``, ``int8_dynamic``...), never by a literal.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..graph import StepOutcome

REPORT_VERSION = 2  # 2: metrics, fidelity, accuracy_drop and speedup_p50 per variant name


def _speedup(ref: dict[str, Any], lat: dict[str, Any]) -> dict[str, float]:
    return {bs: round(r["p50"] / lat[bs]["p50"], 3) for bs, r in ref.items() if bs in lat and lat[bs]["p50"] > 0}


def make_report(lock: dict[str, Any], outcomes: list[StepOutcome], artifacts: list[dict[str, Any]]) -> dict[str, Any]:
    """report.json content: steps, metrics per variant, fidelity, speed-ups, gates and artifacts."""
    by_name = {o.name: o for o in outcomes}
    sizes = {a["path"].removeprefix("artifacts/"): a["size_bytes"] for a in artifacts}
    variants = lock["variants"]
    reference = next(name for name, v in variants.items() if v["reference"])
    metrics, fidelity, drops, speedups, schemes = {}, {}, {}, {}, {}
    for name, v in variants.items():
        ev = by_name[v["nodes"]["evaluate"]].result
        lat = by_name[v["nodes"]["benchmark"]].result
        scores = ev.get("scores") or {}
        metrics[name] = {"size_bytes": sizes.get(v["artifact"]), "accuracy": scores.get("top1"),
                         "top5": scores.get("top5"), "latency_ms": {k: lat[k] for k in lat if k != "notes"}}
        schemes[name] = v["scheme"]
        if "compare" in v["nodes"]:
            cmp = by_name[v["nodes"]["compare"]].result
            fidelity[name] = cmp["fidelity"]
            drops[name] = (cmp.get("drop") or {}).get("top1")
    for name in variants:
        if name != reference:
            speedups[name] = _speedup(metrics[reference]["latency_ms"], metrics[name]["latency_ms"])
    quantized = next((o.result for o in outcomes if o.kind.startswith("quantize.")), {})
    gates = [{"step": o.name, "message": o.gate_error} for o in outcomes if o.gate_error]
    notes = [f"{o.name}: {n}" for o in outcomes for n in o.result.get("notes", [])]
    return {
        "report_version": REPORT_VERSION,
        "build_id": lock["build_id"],
        "recipe": lock["recipe"].get("name"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "gate_failed" if gates else "ok",
        "steps": [{"name": o.name, "kind": o.kind, "key": o.key, "status": o.status,
                   "seconds": round(o.seconds, 3)} for o in outcomes],
        "reference": reference,
        "variants": list(variants),
        "schemes": schemes,
        "target": {**lock["recipe"]["target"], **{k: quantized[k] for k in ("isa", "activation_type")
                                                  if k in quantized}},
        "metrics": metrics,
        "accuracy_drop": drops,
        "fidelity": fidelity,
        "eval_samples": by_name[variants[reference]["nodes"]["evaluate"]].result.get("samples"),
        "speedup_p50": speedups,
        "gates": gates,
        "notes": notes,
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


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """report.md: the same facts as report.json, laid out for a person."""
    m, ref = report["metrics"], report["reference"]
    batches = list(m[ref]["latency_ms"])
    lines = [f"# qcompile build `{report['build_id']}` — {report['recipe']}", "",
             f"Status: **{report['status']}**", ""]
    target = report["target"]
    lines += [f"Target: {target.get('kind')}" + "".join(f", {k} {target[k]}" for k in ("isa", "activation_type")
                                                        if k in target), ""]
    lines += ["## Models", "", "| variant | size | top-1 | top-5 | " +
              " | ".join(f"p50 ms (bs {bs})" for bs in batches) + " |",
              "|---|---:|---:|---:|" + "---:|" * len(batches)]
    for name in report["variants"]:
        v = m[name]
        lat = " | ".join(_fmt(v["latency_ms"].get(bs, {}).get("p50")) for bs in batches)
        lines.append(f"| {name} | {_size(v['size_bytes'])} | {_fmt(v['accuracy'], pct=True)} | "
                     f"{_fmt(v['top5'], pct=True)} | {lat} |")
    lines.append("")
    for name, fid in report["fidelity"].items():
        drop = report["accuracy_drop"].get(name)
        if drop is not None:
            lines.append(f"{name}: top-1 accuracy drop {drop * 100:.2f} points on {report['eval_samples']} "
                         "held-out samples.")
        parts = [f"top-1 agreement {fid['top1_agreement'] * 100:.2f}%"] if "top1_agreement" in fid else []
        parts.append(f"output cosine mean {fid['cosine_mean']:.5f} (min {fid['cosine_min']:.5f})")
        lines.append(f"{name} vs {ref}: " + ", ".join(parts) + ".")
        sp = report["speedup_p50"].get(name) or {}
        if sp:
            lines.append(f"{name} speed-up (p50): " + ", ".join(f"batch {b}: {s:.2f}x" for b, s in sp.items()))
    for g in report["gates"]:
        lines.append(f"\n**Gate failed** ({g['step']}): {g['message']}")
    for n in report["notes"]:
        lines.append(f"\nNote: {n}")
    lines += ["", "## Steps", "", "| step | kind | status | seconds | key |", "|---|---|---|---:|---|"]
    for s in report["steps"]:
        lines.append(f"| {s['name']} | {s['kind']} | {s['status']} | {s['seconds']:.2f} | `{(s['key'] or '')[:12]}` |")
    lines += ["", "## Artifacts", "", "| path | bytes | sha256 |", "|---|---:|---|"]
    for a in report["artifacts"]:
        lines.append(f"| {a['path']} | {a['size_bytes']} | `{a['sha256'][:16]}` |")
    path.write_text("\n".join(lines) + "\n")
