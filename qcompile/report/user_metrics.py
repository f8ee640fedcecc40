"""report.md's section on the user's own metrics (``eval.metrics``): each variant's value and its drop."""

from __future__ import annotations

from typing import Any


def user_markdown(report: dict[str, Any]) -> list[str]:
    """A table of every user metric per variant, with the drop from the reference (nothing without user metrics).

    The drop reads the metric's own way: for a lower-is-better metric (an error) a rise is a drop.
    """
    metrics = report["metrics"]
    names = sorted({k for v in report["variants"] for k in (metrics[v].get("user") or {})})
    if not names:
        return []
    higher = report.get("user_metric_higher_is_better") or {}
    drops = report.get("user_metric_drop") or {}
    lines = ["", "## Your metrics", "",
             "| variant | " + " | ".join(f"{n} ({'higher' if higher.get(n, True) else 'lower'} is better)"
                                       for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for variant in report["variants"]:
        values = metrics[variant].get("user") or {}
        cells = []
        for n in names:
            value, drop = values.get(n), (drops.get(variant) or {}).get(n)
            cell = "–" if value is None else f"{value:.6g}"
            if drop is not None:
                cell += f" (drop {drop:+.4g})"
            cells.append(cell)
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines
