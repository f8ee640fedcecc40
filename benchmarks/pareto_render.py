"""Render the Pareto plot of a 12-variant sweep before and after the readability work, from the same rows.

The rows (``benchmarks/pareto_rows.json``) come from a real sweep of the offline demo recipe::

    qcompile build -m quant.calibration.method=minmax,entropy,percentile quant.per_channel=true,false \\
                      quant.format=qdq,qoperator eval.max_accuracy_drop=0.003 hydra.sweep.dir=SWEEP
    python benchmarks/pareto_render.py --rows-from SWEEP     # keep its rows, then render

"Before" is the plot code of commit ``BEFORE`` (read with ``git show``, run against the same rows); "after" is the
code of this checkout. Nothing is rebuilt::

    python benchmarks/pareto_render.py                # writes benchmarks/pareto_before.png, pareto_after.png
    python benchmarks/pareto_render.py --batch 8      # the after plot with one panel, batch 8
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROWS = HERE / "pareto_rows.json"
BEFORE = "3031b7755452280fa4b291c9792e3a725f1c913f"  # the last commit with the single-panel plot


def old_module(commit: str) -> types.ModuleType:
    """``qcompile/report/pareto.py`` as it was at ``commit``, importable beside the current package (its relative
    imports resolve in ``qcompile.report``)."""
    import qcompile.report

    src = subprocess.run(["git", "show", f"{commit}:qcompile/report/pareto.py"], cwd=HERE, check=True,
                         capture_output=True, text=True).stdout
    mod = types.ModuleType("qcompile.report._pareto_before")
    mod.__package__ = qcompile.report.__name__
    mod.__file__ = f"{commit[:12]}:qcompile/report/pareto.py"
    exec(compile(src, mod.__file__, "exec"), mod.__dict__)
    return mod


def render_before(rows: list[dict], path: Path) -> None:
    """The plot as the old code drew it: batch 1, front among the gate-passing variants, as its sweep did."""
    old = old_module(BEFORE)
    quality, latency = old.choose_axes(rows)
    ok = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    front = {ok[j] for j in old.pareto_front([rows[i] for i in ok], quality, latency, old.ci_keys(latency),
                                             old.higher_is_better(rows, quality))}
    old.plot_pareto(rows, front, quality, latency, path)


def render_after(rows: list[dict], path: Path, batch: str | None = None) -> None:
    """The plot as ``qcompile report`` now draws it (``--batch`` picks one panel)."""
    from qcompile.report.pareto import choose_axes, panel_keys
    from qcompile.report.pareto_plot import plot_pareto

    quality, latency = choose_axes(rows, batch=batch)
    panels = plot_pareto(rows, quality, panel_keys(rows, batch), path, star_key=latency)
    for p in panels:
        print(f"{p.latency_key}: front {sorted(rows[i]['job'] for i in p.front)}, "
              f"x {p.xlim[0]:.4g}..{p.xlim[1]:.4g} ms, y {p.ylim[0]:.4g}..{p.ylim[1]:.4g}")


def main() -> None:
    """Keep a sweep's rows (``--rows-from``) and/or render both plots from the kept rows."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows-from", type=Path, help="a sweep folder: keep its rows in pareto_rows.json first")
    ap.add_argument("--batch", help="latency point of the after plot (default: smallest and largest, as panels)")
    ap.add_argument("--out", type=Path, default=HERE, help="folder of the two PNGs (default: benchmarks/)")
    a = ap.parse_args()
    if a.rows_from:
        from qcompile.report.sweep import collect_sweep

        ROWS.write_text(json.dumps(collect_sweep(a.rows_from), indent=1) + "\n")
    rows = json.loads(ROWS.read_text())
    render_before(rows, a.out / "pareto_before.png")
    render_after(rows, a.out / "pareto_after.png", a.batch)
    print(f"wrote {a.out / 'pareto_before.png'} and {a.out / 'pareto_after.png'}", file=sys.stderr)


if __name__ == "__main__":
    main()
