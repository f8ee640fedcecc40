"""Pareto front of a sweep (quality vs the quantized variant's latency) and its plot.

matplotlib is an optional extra (``qcompile[sweep]``), so it is only imported inside ``plot_pareto``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import BadInput

Row = dict[str, Any]
LAT_PREFIX = "p50_ms_bs"


def ci_keys(latency_key: str) -> tuple[str, str]:
    """The row keys of the lower and upper 95% CI bounds of ``latency_key`` (``p50_ms_bs1`` ->
    ``p50_ci_lo_ms_bs1``, ``p50_ci_hi_ms_bs1``). They do not start with ``p50_ms_bs``, so they are never taken
    for a latency axis."""
    bs = latency_key[len(LAT_PREFIX):]
    return f"p50_ci_lo_ms_bs{bs}", f"p50_ci_hi_ms_bs{bs}"


def ref_key(key: str) -> str:
    """The row key holding the reference (FP32) variant's value of ``key`` (its p50 or a CI bound)."""
    return f"ref_{key}"


def measurably_faster(a: tuple[float, float | None, float | None], b: tuple[float, float | None, float | None]) -> bool:
    """Whether latency ``a`` beats ``b`` beyond the noise; each is (p50, ci_lo, ci_hi).

    With both CIs known: ``a``'s upper bound is below ``b``'s lower bound. Without (reports from before CIs
    were measured): the plain p50 comparison.
    """
    if None not in (a[1], a[2], b[1], b[2]):
        return a[2] < b[1]
    return a[0] < b[0]


def pareto_front(rows: list[Row], quality_key: str, latency_key: str,
                 ci: tuple[str, str] | None = None, higher_is_better: bool = True) -> set[int]:
    """Indices of the rows no other row dominates (higher quality is better, lower latency is better), with
    latency compared beyond the noise when ``ci`` names the rows' CI bound keys (see ``measurably_faster``).

    Row ``j`` dominates row ``i`` when it is at least as good in quality, ``i`` is not measurably faster, and
    ``j`` is better somewhere: higher quality or measurably faster. So a variant is starred only when its latency
    beats every at-least-as-good candidate beyond the noise: a speed advantage inside the noise buys nothing.
    Variants equal in quality whose CIs overlap are both on the front (a tie, as are identical numbers).
    Without CIs this is the classic definition. Rows lacking a quality or a p50 never are on the front.
    ``higher_is_better=False`` (a user metric that is an error) reads quality the other way.
    """
    lo_key, hi_key = ci or ("", "")
    sign = 1 if higher_is_better else -1
    pts = {i: (sign * r[quality_key], (r[latency_key], r.get(lo_key), r.get(hi_key))) for i, r in enumerate(rows)
           if r.get(quality_key) is not None and r.get(latency_key) is not None}

    def dominates(j: int, i: int) -> bool:
        (qj, lj), (qi, li) = pts[j], pts[i]
        return qj >= qi and not measurably_faster(li, lj) and (qj > qi or measurably_faster(lj, li))

    return {i for i in pts if not any(dominates(j, i) for j in pts if j != i)}


def point_order(point: str) -> tuple[int, int, str]:
    """Sort key of a latency point: ``"8"`` (batch 8) or ``"8x128"`` (batch 8, 128 tokens), by batch then
    length; anything else last."""
    bs, _, seq = point.partition("x")
    if bs.isdigit() and (not seq or seq.isdigit()):
        return int(bs), int(seq or 0), ""
    return 1 << 30, 0, point


def point_label(point: str) -> str:
    """A latency point for people: ``"8"`` -> ``batch 8``, ``"8x128"`` -> ``batch 8, 128 tokens``."""
    bs, _, seq = str(point).partition("x")
    return f"batch {bs}" + (f", {seq} tokens" if seq else "")


USER_PREFIX = "user_"  # sweep columns of the user's own metrics (eval.metrics): user_<name>, user_<name>_fp32...


def choose_axes(rows: list[Row], metric: str | None = None) -> tuple[str, str | None]:
    """(quality_key, latency_key) for a sweep: the user metric ``metric`` (eval.metrics.<metric>) when given,
    else accuracy when every built variant has labels, Spearman correlation with human scores when every one has
    scored pairs (embedding models), else output cosine (synthetic data has no labels); p50 at the smallest batch
    size (and shortest sequence) measured. Bad input when no built variant measured ``metric``."""
    built = [r for r in rows if r["status"] in ("ok", "gate_failed")]
    if metric is not None:
        if not any(r.get(USER_PREFIX + metric) is not None for r in built):
            have = sorted({k[len(USER_PREFIX):] for r in built for k in r if k.startswith(USER_PREFIX)
                           and not k.endswith(("_fp32", "_drop", "_higher_is_better"))})
            raise BadInput(f"no built variant of the sweep measured the metric {metric!r} (its user metrics: "
                           f"{', '.join(have) or 'none'})", key="--metric")
    has = {k: bool(built) and all(r.get(k) is not None for r in built) for k in ("accuracy", "spearman")}
    lat_cols = sorted((k for k in (rows[0] if rows else {}) if k.startswith(LAT_PREFIX)),
                      key=lambda k: point_order(k[len(LAT_PREFIX):]))
    if metric is not None:
        return USER_PREFIX + metric, (lat_cols[0] if lat_cols else None)
    quality = "accuracy" if has["accuracy"] else "spearman" if has["spearman"] else "cosine_mean"
    return quality, (lat_cols[0] if lat_cols else None)


def higher_is_better(rows: list[Row], quality_key: str) -> bool:
    """Which way the quality axis reads: built-in measures up; a user metric as its rows say (eval.metrics)."""
    return not any(r.get(f"{quality_key}_higher_is_better") is False for r in rows)


def quality_label(quality_key: str) -> str:
    """Axis label / table note that says which quality measure is shown, and why."""
    if quality_key == "accuracy":
        return "accuracy of the variant (%)"
    if quality_key == "spearman":
        return "Spearman correlation of embedding cosine with human scores"
    if quality_key.startswith(USER_PREFIX):
        return f"{quality_key[len(USER_PREFIX):]} of the variant (your metric, eval.metrics)"
    return "output cosine vs FP32 (mean; data has no labels)"


def short_labels(rows: list[Row]) -> list[str]:
    """``#job key=value ...`` keeping only the overrides whose values differ between the given rows."""
    parsed = []
    for r in rows:
        kv: dict[str, str] = {}
        for o in (r.get("overrides") or "").split():
            k, _, v = o.partition("=")
            kv[k.lstrip("+~")] = v
        parsed.append(kv)
    keys = list(dict.fromkeys(k for kv in parsed for k in kv))
    differ = [k for k in keys if len({kv.get(k) for kv in parsed}) > 1]
    # The last dotted segment is enough to tell variants apart and keeps annotations short.
    return [" ".join([f"#{r['job']}"] + [f"{k.rsplit('.', 1)[-1]}={kv[k]}" for k in differ if k in kv])
            for r, kv in zip(rows, parsed)]


def reference_points(rows: list[Row], quality_key: str, latency_key: str | None
                     ) -> list[tuple[float, float | None, float | None, float]]:
    """Distinct (p50, ci_lo, ci_hi, quality) of the reference (FP32) variant over the built jobs, quality in the
    plot's units (accuracy in %, cosine 1.0: the reference's outputs against themselves).

    Jobs that share the reference measurement (through the cache) give one point; jobs with different models
    or machines give one each.
    """
    if not latency_key:
        return []
    lo_key, hi_key = ci_keys(latency_key)
    points = []
    for r in rows:
        if r["status"] not in ("ok", "gate_failed") or r.get(ref_key(latency_key)) is None:
            continue
        if quality_key in ("accuracy", "spearman") or quality_key.startswith(USER_PREFIX):
            ref = r.get(f"{quality_key}_fp32")
            quality = None if ref is None else ref * (100 if quality_key == "accuracy" else 1)
        else:
            quality = 1.0
        if quality is not None:
            points.append((r[ref_key(latency_key)], r.get(ref_key(lo_key)), r.get(ref_key(hi_key)), quality))
    return list(dict.fromkeys(points))


def _xerr(points: list[tuple[float, float | None, float | None]]) -> list[list[float]]:
    # Asymmetric bars: the median's CI is not centred on it (latency has a long right tail).
    return [[max(0.0, x - lo) if lo is not None else 0.0 for x, lo, _ in points],
            [max(0.0, hi - x) if hi is not None else 0.0 for x, _, hi in points]]


def plot_pareto(rows: list[Row], front: set[int], quality_key: str, latency_key: str | None,
                path: Path) -> None:
    """Write a PNG scatter of quality vs p50 latency of each row's variant; marker area follows its model size.

    Horizontal bars are the p50's 95% confidence interval. Pareto-optimal variants are highlighted, joined by
    a step line and labelled with the overrides that differ between variants; gate-failed variants are drawn
    hollow; failed and missing ones are left out. The reference (FP32) is a black diamond of its own.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scale = 100.0 if quality_key == "accuracy" else 1.0
    idx = [i for i, r in enumerate(rows) if r["status"] in ("ok", "gate_failed") and latency_key
           and r.get(quality_key) is not None and r.get(latency_key) is not None]
    labels = dict(zip(idx, short_labels([rows[i] for i in idx])))
    sizes = [rows[i].get("size_bytes") or 0 for i in idx]
    biggest = max(sizes, default=0) or 1

    def area(i: int) -> float:
        return 40 + 500 * (rows[i].get("size_bytes") or 0) / biggest

    def xy(i: int) -> tuple[float, float]:
        return rows[i][latency_key], rows[i][quality_key] * scale

    counts = {s: sum(r["status"] == s for r in rows) for s in ("ok", "gate_failed", "failed", "missing")}
    title = f"qcompile sweep: {len(rows)} variants ({counts['ok']} ok"
    title += "".join(f", {n} {s.replace('_', ' ')}" for s, n in counts.items() if s != "ok" and n) + ")"

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    groups = [
        ([i for i in idx if i in front], dict(c="tab:orange", edgecolors="black", linewidths=1.2, zorder=3),
         "Pareto-optimal"),
        ([i for i in idx if i not in front and rows[i]["status"] == "ok"],
         dict(c="tab:blue", alpha=0.55, edgecolors="none", zorder=2), "dominated"),
        ([i for i in idx if rows[i]["status"] == "gate_failed"],
         dict(facecolors="none", edgecolors="tab:red", linewidths=1.2, zorder=2), "gate failed"),
    ]
    for members, style, name in groups:
        if members:
            ax.scatter([xy(i)[0] for i in members], [xy(i)[1] for i in members],
                       s=[area(i) for i in members], label=name, **style)
    lo_key, hi_key = ci_keys(latency_key) if latency_key else ("", "")
    with_ci = [i for i in idx if rows[i].get(lo_key) is not None and rows[i].get(hi_key) is not None]
    if with_ci:
        ax.errorbar([xy(i)[0] for i in with_ci], [xy(i)[1] for i in with_ci],
                    xerr=_xerr([(xy(i)[0], rows[i][lo_key], rows[i][hi_key]) for i in with_ci]),
                    fmt="none", ecolor="0.15", elinewidth=1.2, capsize=3, zorder=3.5)
    refs = reference_points(rows, quality_key, latency_key)
    if refs:
        ax.errorbar([p[0] for p in refs], [p[3] for p in refs], xerr=_xerr([p[:3] for p in refs]), fmt="D",
                    color="black", ms=7, elinewidth=1, capsize=3, zorder=4, label="FP32 reference")
        for x, _, _, y in refs:
            ax.annotate("FP32", (x, y), xytext=(6, 6), textcoords="offset points", fontsize=8, zorder=5)
    on_front = sorted((i for i in idx if i in front), key=lambda i: xy(i))
    if len(on_front) > 1:
        # A step: for any latency budget, the best quality reachable is that of the last front point left of it.
        ax.step([xy(i)[0] for i in on_front], [xy(i)[1] for i in on_front], where="post",
                color="tab:orange", lw=1.2, alpha=0.8, zorder=1)
    tags = []
    for i in idx:
        x, y = xy(i)
        if i in front:
            # Up and to the left of a front point nothing can lie (it would dominate the point): room for a label.
            box = dict(boxstyle="round,pad=0.2", fc="white", ec="tab:orange", alpha=0.9)
            tags.append(ax.annotate(labels[i], (x, y), xytext=(-8, 8), textcoords="offset points", ha="right",
                                    va="bottom", fontsize=8, zorder=5, bbox=box))
        else:
            ax.annotate(f"#{rows[i]['job']}", (x, y), xytext=(6, -10), textcoords="offset points",
                        fontsize=7, color="0.4")
    if not idx:
        ax.text(0.5, 0.5, "no built variant has both a quality and a latency figure",
                ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xlabel(f"latency p50 (ms), {point_label(latency_key[len(LAT_PREFIX):]) if latency_key else 'batch ?'}  "
                  "(lower is better)")
    ax.set_ylabel(quality_label(quality_key)
                  + ("\n(higher is better)" if higher_is_better(rows, quality_key) else "\n(lower is better)"))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.15, y=0.2)
    if idx or refs:
        leg = ax.legend(loc="lower right", fontsize=8, markerscale=0.6,
                        title=f"marker area ∝ model size (max {biggest / 1024:.0f} KiB)", title_fontsize=8)
        leg.set_zorder(4)
    fig.tight_layout()
    fig.canvas.draw()
    left_edge = ax.get_window_extent().x0
    for tag in tags:
        if tag.get_window_extent().x0 < left_edge:  # would leave the axes: put it on the right instead
            tag.set_horizontalalignment("left")
            tag.xyann = (8, 8)
    fig.savefig(path, format="png")
    plt.close(fig)
