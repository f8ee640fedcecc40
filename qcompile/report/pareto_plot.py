"""The Pareto plot of a sweep: quality against each variant's p50 latency, one panel per latency point shown.

Written to stay readable at a dozen variants and more, most of them close together: a point carries only its job
number (``point_labels`` places it clear of other labels and markers), and a key under the panels lists each job's
overrides; the legend sits under the panels, never over a point; the axes are bounded by the data (accuracy never
above 100%). matplotlib is an optional extra (``qcompile[sweep]``), so it is imported inside ``plot_pareto``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .pareto import (
    LAT_PREFIX,
    USER_PREFIX,
    candidate_front,
    ci_keys,
    higher_is_better,
    point_label,
    quality_label,
    reference_points,
    short_labels,
)
from .point_labels import PointLabel, place_labels

Row = dict[str, Any]
KEY_LINES = 24  # a longer key lists the Pareto-optimal variants only; sweep.md has every row
_STYLE = {  # small markers drawn over the large stars, so a dot that shares a star's spot stays visible
    "front": dict(marker="*", s=190, c="tab:orange", edgecolors="black", linewidths=0.8, zorder=4),
    "dominated": dict(marker="o", s=55, c="tab:blue", alpha=0.7, edgecolors="white", linewidths=0.6, zorder=5),
    "gate_failed": dict(marker="X", s=75, c="tab:red", alpha=0.85, edgecolors="white", linewidths=0.6, zorder=5),
}
_HALF_WIDTH = {"front": 9.0, "dominated": 5.0, "gate_failed": 5.5}  # points, for label placement
_COLOR = {"front": "black", "dominated": "0.35", "gate_failed": "tab:red"}


@dataclass(frozen=True)
class Panel:
    """What one panel of the plot shows: its latency key, the rows starred there, and its axes' limits (x in ms,
    y in the quality's plot units: accuracy in %)."""

    latency_key: str | None
    front: frozenset[int]
    xlim: tuple[float, float]
    ylim: tuple[float, float]


def quality_scale(quality_key: str) -> float:
    """Plot units per stored unit of the quality (accuracy is stored as a fraction, drawn in %)."""
    return 100.0 if quality_key == "accuracy" else 1.0


def quality_ceiling(quality_key: str) -> float | None:
    """The most the quality can be in plot units (100% accuracy, a cosine or correlation of 1); None for a user
    metric, which has no known bound."""
    if quality_key.startswith(USER_PREFIX):
        return None
    return 100.0 if quality_key == "accuracy" else 1.0


def bounded_limits(values: list[float], pad: float, ceiling: float | None = None) -> tuple[float, float]:
    """Axis limits around ``values`` with ``pad`` (a fraction of their span) on each side, never above
    ``ceiling``; a single value gets a span of its own so its point is not drawn on the frame."""
    lo, hi = min(values), max(values)
    span = hi - lo or abs(hi) * 0.02 or 1.0
    lo, hi = lo - pad * span, hi + pad * span
    return lo, (hi if ceiling is None else min(hi, ceiling))


def plot_pareto(rows: list[Row], quality_key: str, latency_keys: list[str], path: Path,
                star_key: str | None = None) -> list[Panel]:
    """Write a PNG of quality against p50 latency, one panel per key of ``latency_keys`` (``p50_ms_bs8``), side by
    side on one quality axis; return what each panel shows.

    Each panel stars its own Pareto front (``candidate_front`` at its latency), joined by a step line; dominated
    variants are blue dots, gate-failed ones red crosses (never candidates); horizontal bars are the p50's 95%
    confidence interval. The FP32 reference is a black diamond with its CI and a dashed line at its quality, and
    the panel's top axis reads as speed-up over it. ``star_key`` names the panel whose front sweep.md stars.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys: list[str | None] = list(latency_keys) or [None]
    fronts = [frozenset(candidate_front(rows, quality_key, key)) for key in keys]
    key_lines = _key_lines(rows, list(zip(keys, fronts)))
    key_height = 0.17 * (len(key_lines) + (2 if len(keys) > 1 else 3))
    fig = plt.figure(figsize=(5.6 * len(keys) + 0.9, 4.6 + key_height), dpi=110, layout="constrained")
    grid = fig.add_gridspec(2, len(keys), height_ratios=[4.3, key_height])
    axes: list[Any] = []
    for n in range(len(keys)):
        axes.append(fig.add_subplot(grid[0, n], sharey=axes[0] if axes else None))
    drawn = [_draw_panel(ax, rows, quality_key, key, front, key == star_key and len(keys) > 1)
             for ax, key, front in zip(axes, keys, fronts)]
    ys = [y for panel, _ in drawn for y in panel.ylim]
    ylim = (min(ys), max(ys))  # one quality axis for all panels
    axes[0].set_ylim(*ylim)
    axes[0].set_ylabel(quality_label(quality_key)
                       + ("\n(higher is better)" if higher_is_better(rows, quality_key) else "\n(lower is better)"))
    for ax in axes[1:]:
        ax.tick_params(labelleft=False)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "gate_failed", "failed", "missing")}
    fig.suptitle(f"qcompile sweep: {len(rows)} variants ({counts['ok']} ok"
                 + "".join(f", {n} {s.replace('_', ' ')}" for s, n in counts.items() if s != "ok" and n) + ")")
    key_ax = fig.add_subplot(grid[1, :])
    key_artists = _draw_key(key_ax, key_lines, set().union(*(what for _, what in drawn)), 5 if len(keys) > 1 else 3)

    fig.canvas.draw()  # the layout is settled: labels are placed against the axes' final size, which then stays
    fig.set_layout_engine("none")
    for ax, key, front in zip(axes, keys, fronts):
        if key:
            place_labels(ax, _point_labels(rows, quality_key, key, front))
    fig.savefig(path, format="png", bbox_inches="tight", pad_inches=0.15,
                bbox_extra_artists=fig.get_default_bbox_extra_artists() + key_artists)
    plt.close(fig)
    return [Panel(panel.latency_key, panel.front, panel.xlim, ylim) for panel, _ in drawn]


def _xy(row: Row, quality_key: str, latency_key: str) -> tuple[float, float]:
    return row[latency_key], row[quality_key] * quality_scale(quality_key)


def _xerr(points: list[tuple[float, float | None, float | None]]) -> list[list[float]]:
    # Asymmetric bars: the median's CI is not centred on it (latency has a long right tail).
    return [[max(0.0, x - lo) if lo is not None else 0.0 for x, lo, _ in points],
            [max(0.0, hi - x) if hi is not None else 0.0 for x, _, hi in points]]


def _status(row: Row, i: int, front: frozenset[int]) -> str:
    return "front" if i in front else "gate_failed" if row["status"] == "gate_failed" else "dominated"


def _shown(rows: list[Row], quality_key: str, latency_key: str | None) -> list[int]:
    """Rows drawn in a panel: built, with a quality and a latency (failed and missing jobs are in the key only)."""
    return [i for i, r in enumerate(rows) if r["status"] in ("ok", "gate_failed") and latency_key
            and r.get(quality_key) is not None and r.get(latency_key) is not None]


def _draw_panel(ax: Any, rows: list[Row], quality_key: str, latency_key: str | None, front: frozenset[int],
                starred_in_table: bool) -> tuple[Panel, set[str]]:
    """Draw one panel's points, CIs, front line and reference and set its x limits; return its limits (y before
    the panels share one axis) and what it drew (the legend names only that)."""
    shown = _shown(rows, quality_key, latency_key)
    xy = {i: _xy(rows[i], quality_key, latency_key) for i in shown}  # type: ignore[arg-type]
    drawn = set()
    for status, style in _STYLE.items():
        members = [i for i in shown if _status(rows[i], i, front) == status]
        if members:
            drawn.add(status)
            # clip_on off: a point at 100% accuracy sits on the frame and is drawn whole.
            ax.scatter([xy[i][0] for i in members], [xy[i][1] for i in members], clip_on=False, **style)
    lo_key, hi_key = ci_keys(latency_key) if latency_key else ("", "")
    with_ci = [i for i in shown if rows[i].get(lo_key) is not None and rows[i].get(hi_key) is not None]
    if with_ci:
        drawn.add("ci")
        ax.errorbar([xy[i][0] for i in with_ci], [xy[i][1] for i in with_ci],
                    xerr=_xerr([(xy[i][0], rows[i][lo_key], rows[i][hi_key]) for i in with_ci]),
                    fmt="none", ecolor="0.3", elinewidth=0.9, capsize=2.5, zorder=3)
    on_front = sorted(xy[i] for i in shown if i in front)
    if len(on_front) > 1:
        # A step: for any latency budget, the best quality reachable is that of the last front point left of it.
        ax.step([p[0] for p in on_front], [p[1] for p in on_front], where="post", color="tab:orange", lw=1.2,
                alpha=0.8, zorder=2)
    refs = reference_points(rows, quality_key, latency_key)
    if refs:
        drawn.add("reference")
        for ref in refs:
            ax.axhline(ref[3], color="black", lw=0.8, ls="--", alpha=0.5, zorder=1)
        ax.errorbar([p[0] for p in refs], [p[3] for p in refs], xerr=_xerr([p[:3] for p in refs]), fmt="D",
                    color="black", ms=6, elinewidth=0.9, capsize=2.5, zorder=6, clip_on=False)
    xs = [rows[i][k] for i in with_ci for k in (lo_key, hi_key)] + [p[0] for p in xy.values()]
    xs += [v for p in refs for v in p[:3] if v is not None]
    ys = [p[1] for p in xy.values()] + [p[3] for p in refs]
    xlim = bounded_limits(xs, 0.08) if xs else (0.0, 1.0)
    ylim = bounded_limits(ys, 0.15, quality_ceiling(quality_key)) if ys else (0.0, 1.0)
    ax.set_xlim(*xlim)
    if len(refs) == 1 and refs[0][0] > 0:
        _speedup_axis(ax, refs[0][0], xlim)
    point = latency_key[len(LAT_PREFIX):] if latency_key else None
    ax.set_title(point_label(point) + (" (★ as in sweep.md)" if starred_in_table else "") if point
                 else "no latency measured", fontsize=10, loc="left")
    ax.set_xlabel("latency p50 (ms; lower is better)")
    ax.grid(True, alpha=0.3)
    if not shown:
        ax.text(0.5, 0.5, "no built variant has both a quality and a latency figure", ha="center", va="center",
                transform=ax.transAxes, color="0.4")
    return Panel(latency_key, front, xlim, ylim), drawn


# Speed-ups the top axis may mark, roundest first: 1, 2, 5; then 1.5, 2.5, 3, 4; then the rest (times 10^k).
_ROUND = ((1, 2, 5), (1.5, 2.5, 3, 4), (1.1, 1.2, 1.25, 1.75, 6, 8))


def _speedup_axis(ax: Any, ref: float, xlim: tuple[float, float], gap_px: float = 40) -> None:
    """A top axis reading latency as speed-up over the reference (``ref`` / latency), marked at round values at
    least ``gap_px`` apart, 1× and the roundest first: evenly spaced ones would crowd the fast end, where that
    axis is compressed."""
    import numpy as np

    def speedup(x: Any) -> Any:  # its own inverse
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, ref / np.where(x > 0, x, 1.0), np.inf)

    x0, x1 = xlim
    width = ax.get_window_extent().width

    def px(s: float) -> float:
        return (ref / s - x0) / (x1 - x0) * width

    chosen: list[float] = []
    for tier in _ROUND:
        values = sorted({round(m * 10.0 ** k, 6) for m in tier for k in (-1, 0, 1, 2)}, key=lambda s: (s != 1, -s))
        for s in values:
            if 0 <= px(s) <= width and all(abs(px(s) - px(c)) >= gap_px for c in chosen):
                chosen.append(s)
    top = ax.secondary_xaxis("top", functions=(speedup, speedup))
    top.set_xlabel("speed-up over FP32 (×)", fontsize=8)
    top.tick_params(labelsize=8)
    top.set_xticks(sorted(chosen))
    top.xaxis.set_major_formatter(lambda v, _: f"{v:.3g}×")


def _point_labels(rows: list[Row], quality_key: str, latency_key: str, front: frozenset[int]) -> list[PointLabel]:
    """The reference's label, then the job numbers, front first (they get the nearest spots); jobs drawn on the
    same spot (within 3 pixels) share one label."""
    labels = [PointLabel((x, y), "FP32") for x, _, _, y in reference_points(rows, quality_key, latency_key)]
    shown = sorted(_shown(rows, quality_key, latency_key),
                   key=lambda i: (_status(rows[i], i, front) != "front", rows[i]["job"]))
    groups: list[list[int]] = []
    for i in shown:
        here = rows[i][latency_key], rows[i][quality_key]
        near = next((g for g in groups if _same_spot(rows[g[0]], here, latency_key, quality_key)), None)
        if near is None:
            groups.append([i])
        else:
            near.append(i)
    for g in groups:
        status = _status(rows[g[0]], g[0], front)
        labels.append(PointLabel(_xy(rows[g[0]], quality_key, latency_key), ",".join(f"#{rows[i]['job']}" for i in g),
                                 _COLOR[status], status == "front", _HALF_WIDTH[status]))
    return labels


def _same_spot(row: Row, here: tuple[float, float], latency_key: str, quality_key: str) -> bool:
    # Equal to 0.1% of the values: closer than a marker's width at any axis range a sweep gives.
    return all(abs(a - b) <= 1e-3 * max(abs(a), abs(b)) for a, b in zip((row[latency_key], row[quality_key]), here))


def _draw_key(key_ax: Any, lines: list[tuple[str, str]], drawn: set[str], ncol: int) -> list[Any]:
    """The legend of what the panels ``drawn``, then the key, under the panels: outside every panel, neither covers
    a point. Both stay out of the layout (they must not shrink the panels); returns them for the saved image."""
    from matplotlib.lines import Line2D

    def marker(style: dict, label: str) -> Line2D:
        return Line2D([], [], ls="none", marker=style["marker"], markersize=style["s"] ** 0.5,
                      markerfacecolor=style["c"], markeredgecolor=style["edgecolors"], label=label)

    handles = {"front": marker(_STYLE["front"], "Pareto-optimal (passed its gates)"),
               "dominated": marker(_STYLE["dominated"], "dominated"),
               "gate_failed": marker(_STYLE["gate_failed"], "gate failed (not a candidate)"),
               "reference": Line2D([], [], color="black", marker="D", ls="--", lw=0.8, label="FP32 reference"),
               "ci": Line2D([], [], color="0.3", marker="|", markersize=8, lw=0.9, label="p50's 95% CI")}
    shown = [h for name, h in handles.items() if name in drawn]
    key_ax.axis("off")
    artists = [key_ax.legend(handles=shown, loc="upper left", bbox_to_anchor=(0, 1), ncol=ncol, fontsize=8,
                             frameon=False, borderaxespad=0, handletextpad=0.4, columnspacing=1.6)]
    skip = -(-len(shown) // ncol) + 1  # the legend's rows and a blank one
    for n, (status, text) in enumerate(lines):
        artists.append(key_ax.annotate(text, (0, 1), xycoords="axes fraction", xytext=(0, -12 * (skip + n) - 6),
                                       textcoords="offset points", annotation_clip=False, va="top", fontsize=8,
                                       family="monospace", color=_COLOR[status],
                                       fontweight="bold" if status == "front" else "normal"))
    for artist in artists:
        artist.set_in_layout(False)
    return artists


def _key_lines(rows: list[Row], fronts: list[tuple[str | None, frozenset[int]]]) -> list[tuple[str, str]]:
    """(status, text) per job for the key under the panels: job number, where it is Pareto-optimal or that it
    failed, the overrides that differ between jobs, its size. Only the front ones past ``KEY_LINES`` jobs."""
    notes = []
    for i, r in enumerate(rows):
        starred = [point_label(k[len(LAT_PREFIX):]).removeprefix("batch ") for k, f in fronts if k and i in f]
        notes.append(("front", "★ batch " + " & ".join(starred)) if starred else ("dominated", "") if
                     r["status"] == "ok" else ("gate_failed", r["status"].replace("_", " ")))
    jobs = [f"#{r['job']}" for r in rows]
    job_w, note_w = max(map(len, jobs), default=0), max((len(n) for _, n in notes), default=0)
    lines = []
    for r, job, (status, note), label in zip(rows, jobs, notes, short_labels(rows)):
        size = f"  {r['size_bytes'] / 1024:,.1f} KiB" if r.get("size_bytes") else ""
        overrides = label.partition(" ")[2] or r.get("overrides") or "(no overrides)"
        lines.append((status, f"{job:<{job_w}}  {note:<{note_w}}  {overrides}{size}"))
    if len(lines) > KEY_LINES:
        kept = [line for line in lines if line[0] == "front"]
        lines = kept + [("dominated", f"{len(lines) - len(kept)} more variants: see sweep.md")]
    return lines
