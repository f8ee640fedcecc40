"""Assemble report.json and report.md for one build from the step outcomes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..run.scheduler import StepOutcome

REPORT_VERSION = 1


def make_report(lock: dict[str, Any], outcomes: list[StepOutcome], artifacts: list[dict[str, Any]],
                sizes: dict[str, int]) -> dict[str, Any]:
    """report.json content: steps, metrics per variant, fidelity, speedups, gates and artifacts."""
    by_name = {o.name: o for o in outcomes}
    ev = by_name.get("evaluate")
    bench = by_name.get("benchmark")
    evr = ev.result if ev else {}
    acc = evr.get("accuracy") or {}
    latency = bench.result if bench else {}
    metrics = {}
    for variant, src in (("fp32", "fp32"), ("int8", "quant")):
        metrics[variant] = {
            "size_bytes": sizes.get(variant),
            "accuracy": acc.get(src),
            "latency_ms": latency.get(src, {}),
        }
    speedup = {}
    for bs, lat in latency.get("fp32", {}).items():
        q = latency.get("quant", {}).get(bs)
        if q and q["p50"] > 0:
            speedup[bs] = round(lat["p50"] / q["p50"], 3)
    gates = [{"step": o.name, "message": o.gate_error} for o in outcomes if o.gate_error]
    notes = [f"{o.name}: {n}" for o in outcomes for n in o.result.get("notes", [])]
    quant_node = lock["nodes"].get("quantize", {})
    return {
        "report_version": REPORT_VERSION,
        "build_id": lock["build_id"],
        "recipe": lock["recipe"].get("name"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "status": "gate_failed" if gates else "ok",
        "steps": [{"name": o.name, "kind": o.kind, "key": o.key, "status": o.status,
                   "seconds": round(o.seconds, 3)} for o in outcomes],
        "quantization": {"kind": quant_node.get("kind"), **quant_node.get("params", {})},
        "metrics": metrics,
        "accuracy_drop": acc.get("drop"),
        "fidelity": evr.get("fidelity"),
        "eval_samples": evr.get("samples"),
        "speedup_p50": speedup,
        "gates": gates,
        "notes": notes,
        "artifacts": artifacts,
    }


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v * 100:.2f}%" if pct else (f"{v:.4g}" if isinstance(v, float) else str(v))


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """report.md: the same facts as report.json, laid out for a person."""
    m = report["metrics"]
    lines = [f"# qcompile build `{report['build_id']}` — {report['recipe']}", "",
             f"Status: **{report['status']}**", ""]
    lines += ["## Models", "", "| variant | size (KB) | accuracy | " +
              " | ".join(f"p50 ms (bs {bs})" for bs in m["fp32"]["latency_ms"]) + " |",
              "|---|---:|---:|" + "---:|" * len(m["fp32"]["latency_ms"])]
    for variant in ("fp32", "int8"):
        v = m[variant]
        lat = " | ".join(_fmt(x["p50"]) for x in v["latency_ms"].values())
        size = _fmt(round(v["size_bytes"] / 1024, 1)) if v["size_bytes"] else "–"
        lines.append(f"| {variant} | {size} | {_fmt(v['accuracy'], pct=True)} | {lat} |")
    lines.append("")
    if report["accuracy_drop"] is not None:
        lines.append(f"Accuracy drop: {report['accuracy_drop'] * 100:.2f} points "
                     f"on {report['eval_samples']} held-out samples.")
    fid = report.get("fidelity") or {}
    if fid:
        lines.append(f"Fidelity vs FP32: top-1 agreement {fid['top1_agreement'] * 100:.2f}%, "
                     f"output cosine mean {fid['cosine_mean']:.5f} (min {fid['cosine_min']:.5f}).")
    if report["speedup_p50"]:
        lines.append("Speed-up (p50): " + ", ".join(f"batch {b}: {s:.2f}x" for b, s in report["speedup_p50"].items()))
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
