"""The sensitivity table and the fallback search in report.md (the search's plot is the ``plot.search`` step)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHOWN = 10  # sensitivity rows in report.md; report.json and artifacts/sensitivity.json hold them all


def read_sensitivity(out_dir: Path, artifacts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The sensitivity table the build published, for report.json (None when the recipe asked for none)."""
    path = next((a["path"] for a in artifacts if a["path"].endswith("/sensitivity.json")), None)
    return json.loads((out_dir / path).read_text()) if path else None


def markdown(report: dict[str, Any]) -> list[str]:
    """report.md's sections for the sensitivity table and the search (empty when the build had neither)."""
    lines: list[str] = []
    table = report.get("sensitivity")
    if table:
        rows = table["nodes"]
        lines += ["", "## Sensitivity", "",
                  f"Worst {min(SHOWN, len(rows))} of {len(rows)} groups of quantized nodes, ranked by {table['rank']} "
                  f"SQNR on {table['samples']} calibration samples (dB, lower is worse). Local: the noise the "
                  "group's own quantized tensors add; cumulative: its output in the INT8 model against FP32. Keep a "
                  "row in float with `quant.exclude.names=[...]` (its nodes), or let `quant.fallback.enabled=true` "
                  "search.", "", "| # | nodes (as in model.fp32.onnx) | op | local dB | cumulative dB | weights dB |",
                  "|---:|---|---|---:|---:|---:|"]
        for i, r in enumerate(rows[:SHOWN], 1):
            db = {k: "" if r.get(k) is None else f"{r[k]:.1f}"
                  for k in ("local_sqnr_db", "cumulative_sqnr_db", "weight_sqnr_db")}
            lines.append(f"| {i} | {', '.join(f'`{n}`' for n in r['nodes'])} | {r['op_type']} | "
                         f"{db['local_sqnr_db']} | {db['cumulative_sqnr_db']} | {db['weight_sqnr_db']} |")
    found = report.get("search")
    if found:
        trials = found["trials"]
        chosen = trials[found["chosen"]]
        verdict = "passed" if found["passed"] else "found no passing trial"
        lines += ["", "## Fallback search", "",
                  f"Strategy {found['strategy']}, rows ranked by {found.get('rank', 'sensitivity')}: {len(trials)} "
                  f"trials, {verdict}; built trial {chosen['index']} with "
                  f"{len(chosen['float_nodes'])} node(s) in float. Ledger: `search.jsonl`."]
        if found.get("plot"):
            lines += ["", f"![metric against nodes in float]({found['plot']})"]
        values = [t["value"] for t in trials if t["value"] is not None]
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        lines += ["", "| trial | phase | nodes in float | metric | value | gate | size | status | seconds | |",
                  "|---:|---|---:|---|---:|---|---:|---|---:|---|"]
        for t in trials:
            bar = "" if t["value"] is None else "█" * (1 + round(19 * (t["value"] - lo) / ((hi - lo) or 1)))
            size = "" if t["size_bytes"] is None else f"{t['size_bytes'] / 1024:.0f} KiB"
            value = "" if t["value"] is None else f"{t['value']:.4f}"
            lines.append(f"| {t['index']} | {t.get('phase', '')} | {len(t['float_nodes'])} | {t['metric']} | {value} | "
                         f"{'pass' if t['passed'] else 'fail'} | {size} | {t['status']} | {t['seconds']:.2f} | {bar} |")
        if chosen["float_nodes"]:
            lines += ["", "Kept in float: " + ", ".join(f"`{n}`" for n in chosen["float_nodes"]) + "."]
    return lines
