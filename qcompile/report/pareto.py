"""Pareto front of a sweep (quality vs the quantized variant's latency) and the choice of its axes.

The plot itself is ``pareto_plot`` (matplotlib is an optional extra, ``qcompile[sweep]``).
"""

from __future__ import annotations

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


def measured_points(rows: list[Row]) -> list[str]:
    """The latency points (``"1"``, ``"8"``, ``"8x128"``) some built variant of the sweep has a p50 for, in
    ``point_order``."""
    built = [r for r in rows if r["status"] in ("ok", "gate_failed")]
    cols = {k for r in built for k, v in r.items() if k.startswith(LAT_PREFIX) and v is not None}
    return sorted((k[len(LAT_PREFIX):] for k in cols), key=point_order)


def resolve_point(batch: str | int, points: list[str], option: str = "--batch") -> str:
    """The latency point ``batch`` names among the measured ``points``: the point itself (``"8"``, ``"8x128"``),
    or a bare batch size when exactly one measured point has it. Bad input naming ``option`` and the measured
    points otherwise."""
    value = str(batch).strip()
    if value in points:
        return value
    same_batch = [p for p in points if p.partition("x")[0] == value]
    if len(same_batch) == 1:
        return same_batch[0]
    if same_batch:
        raise BadInput(f"batch {value} was measured at several sequence lengths ({', '.join(same_batch)}): "
                       "name one", key=option)
    measured = ", ".join(points) or "none"
    raise BadInput(f"batch {value} was not measured; the measured batches are: {measured}", key=option)


def choose_latency(rows: list[Row], batch: str | int | None = None, option: str = "--batch") -> str | None:
    """The latency key the Pareto front and the table's ★ use: ``batch``'s point when given (bad input naming
    ``option`` when the sweep did not measure it), else the largest batch measured (a speed-up that shows only in
    batches is not hidden by batch 1); None when no variant has a latency."""
    points = measured_points(rows)
    if batch is not None:
        return LAT_PREFIX + resolve_point(batch, points, option)
    return LAT_PREFIX + points[-1] if points else None


def panel_keys(rows: list[Row], batch: str | int | None = None, option: str = "--batch") -> list[str]:
    """The latency keys the plot shows, one panel each: ``batch``'s point when given, else the smallest and the
    largest point measured (one panel when the sweep measured one)."""
    if batch is not None:
        return [LAT_PREFIX + resolve_point(batch, measured_points(rows), option)]
    points = measured_points(rows)
    return [LAT_PREFIX + p for p in dict.fromkeys(points[:1] + points[-1:])]


def choose_axes(rows: list[Row], metric: str | None = None, batch: str | int | None = None,
                option: str = "--batch") -> tuple[str, str | None]:
    """(quality_key, latency_key) for a sweep: the user metric ``metric`` (eval.metrics.<metric>) when given,
    else accuracy when every built variant has labels, Spearman correlation with human scores when every one has
    scored pairs (embedding models), else output cosine (synthetic data has no labels); the latency key from
    ``choose_latency``. Bad input when no built variant measured ``metric`` or ``batch``."""
    built = [r for r in rows if r["status"] in ("ok", "gate_failed")]
    if metric is not None:
        if not any(r.get(USER_PREFIX + metric) is not None for r in built):
            have = sorted({k[len(USER_PREFIX):] for r in built for k in r if k.startswith(USER_PREFIX)
                           and not k.endswith(("_fp32", "_drop", "_higher_is_better"))})
            raise BadInput(f"no built variant of the sweep measured the metric {metric!r} (its user metrics: "
                           f"{', '.join(have) or 'none'})", key="--metric")
    latency = choose_latency(rows, batch, option)
    if metric is not None:
        return USER_PREFIX + metric, latency
    has = {k: bool(built) and all(r.get(k) is not None for r in built) for k in ("accuracy", "spearman")}
    quality = "accuracy" if has["accuracy"] else "spearman" if has["spearman"] else "cosine_mean"
    return quality, latency


def candidate_front(rows: list[Row], quality_key: str, latency_key: str | None) -> set[int]:
    """Indices of ``rows`` on the Pareto front at ``latency_key``: only variants that passed their gates are
    candidates (a rejected build is not a deployment option), latency judged beyond the noise of its CI."""
    if not latency_key:
        return set()
    ok = [i for i, r in enumerate(rows) if r["status"] == "ok"]
    front = pareto_front([rows[i] for i in ok], quality_key, latency_key, ci_keys(latency_key),
                         higher_is_better(rows, quality_key))
    return {ok[j] for j in front}


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
