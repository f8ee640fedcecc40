"""Latency of one model variant on the target, per batch size, with a confidence interval on the median.

Each batch size is timed until the 95% confidence interval of its p50 is narrow enough (``ci_width``, relative
to the p50), with ``iterations`` as the minimum number of timed runs and ``max_seconds`` of timed runs as the
budget for going beyond it. Whether the target was reached is recorded, as is the machine's load, since a busy
machine is the usual reason it was not. These absolute latencies are measured once per variant; a variant's
speed-up over FP32 and its verdict come from ``speedup``, which times the two as a pair.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from ..errors import BadInput
from ..kinds.measure import BenchSpec
from .arrays import count, load_samples, session_fixed_batch
from .base import Step, StepContext, register
from .host_load import LoadProbe
from .ort_session import session

Z95 = 1.959964  # two-sided 95% quantile of the standard normal
# With fewer runs even [min, max] covers the median with less than 95% probability (1 - 2 * 0.5**n < 0.95 for
# n < 6), so no interval from fewer runs can claim the target.
MIN_RUNS_FOR_CI = 6


class BenchmarkParams(BenchSpec):
    """The bench section (what to time and how long: see ``measure``), on the target's runtime."""

    runtime: dict[str, Any]


def median_ci_ranks(n: int, z: float = Z95) -> tuple[int, int]:
    """1-based ranks (lo, hi) of the order statistics bounding a distribution-free CI for the median of ``n``
    samples: ``n/2 - z*sqrt(n)/2`` rounded down and ``1 + n/2 + z*sqrt(n)/2`` rounded up, clamped to [1, n].

    Rounding outwards keeps the coverage at or above the nominal level. For n = 100 this gives (40, 61).
    """
    if n < 1:
        raise ValueError("need at least one sample")
    half = z * math.sqrt(n) / 2
    return max(1, math.floor(n / 2 - half)), min(n, math.ceil(1 + n / 2 + half))


def median_ci(samples: Iterable[float], z: float = Z95) -> tuple[float, float]:
    """(lo, hi): the distribution-free confidence interval of the median of ``samples`` (order statistics at
    ``median_ci_ranks``); no assumption about the shape of the latency distribution, whose tail is long."""
    import numpy as np

    a = np.sort(np.asarray(list(samples), dtype=float))
    lo, hi = median_ci_ranks(len(a), z)
    return float(a[lo - 1]), float(a[hi - 1])


def relative_half_width(p50: float, ci: tuple[float, float]) -> float:
    """The larger distance from the p50 to either CI bound, as a fraction of the p50 (``inf`` when p50 <= 0).

    The larger side, not the mean of both, so "within 5%" means the whole interval lies within p50 +- 5%.
    """
    if p50 <= 0:
        return math.inf
    return max(p50 - ci[0], ci[1] - p50) / p50


@dataclass
class Measurement:
    """Timed runs of one batch size and whether their p50 CI met the target."""

    times_ms: list[float]
    ci_reached: bool
    seconds: float

    def summary(self) -> dict[str, Any]:
        """What latency.json keeps per batch size: p50/p90/p99/mean, p50_ci, runs, ci_reached (ms, rounded)."""
        stats = percentiles(self.times_ms)
        lo, hi = median_ci(self.times_ms)
        return {**stats, "p50_ci": [round(lo, 4), round(hi, 4)], "runs": len(self.times_ms),
                "ci_reached": self.ci_reached, "seconds": round(self.seconds, 3)}


def measure(run_once: Callable[[], Any], min_runs: int, ci_width: float, max_seconds: float,
            progress: Callable[[Iterator[int]], Iterable[int]] | None = None,
            clock: Callable[[], float] = time.perf_counter) -> Measurement:
    """Time ``run_once`` at least ``min_runs`` times, then until the p50's 95% CI is within +-``ci_width`` of
    the p50 or ``max_seconds`` of timed runs have passed (``ci_reached`` is then False).

    The minimum always runs in full, even past the budget: it is the number of runs the recipe asked for.
    The CI is re-checked only when the run count has grown by 10%, so the sorting costs O(n log n) overall
    rather than per run; the count overshoots the one that first met the target by at most that much.
    """
    times: list[float] = []
    runs = itertools.count()
    start = clock()
    next_check = max(min_runs, MIN_RUNS_FOR_CI)
    reached = False
    for _ in (progress(runs) if progress else runs):
        t0 = clock()
        run_once()
        t1 = clock()
        times.append((t1 - t0) * 1e3)
        n = len(times)
        if n >= next_check:
            next_check = max(n + 1, math.ceil(n * 1.1))
            if relative_half_width(_p50(times), median_ci(times)) <= ci_width:
                reached = True
                break
        if n >= min_runs and t1 - start >= max_seconds:
            # Judge the runs made, not only those of the last check, so ci_reached agrees with the recorded CI.
            reached = n >= MIN_RUNS_FOR_CI and relative_half_width(_p50(times), median_ci(times)) <= ci_width
            break
    return Measurement(times, reached, clock() - start)


def _p50(times: list[float]) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(times), 50))


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of latency samples in milliseconds."""
    import numpy as np

    a = np.asarray(samples_ms)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4),
            "p99": round(float(np.percentile(a, 99)), 4), "mean": round(float(a.mean()), 4)}


def feed_of(inputs: dict[str, Any], batch: int, sequence: int | None = None) -> dict[str, Any]:
    """A batch of ``batch`` real samples (cycled when the evaluation set is smaller); with ``sequence``, token
    inputs of exactly that many real tokens: the longest texts first, each cut to ``sequence`` or, when shorter,
    its own tokens repeated, with every position attended (so the run costs what that length costs)."""
    import numpy as np

    if sequence is None:
        idx = np.arange(batch) % count(inputs)
        return {name: np.ascontiguousarray(x[idx]) for name, x in inputs.items()}
    mask = inputs["attention_mask"]
    lengths = mask.sum(axis=1)
    idx = np.argsort(-lengths, kind="stable")[np.arange(batch) % count(inputs)]
    out = {}
    for name, x in inputs.items():
        rows = []
        for i in idx:
            real = x[i, :max(int(lengths[i]), 1)]
            rows.append(np.resize(real, sequence))  # np.resize repeats the row to fill the length
        out[name] = np.ascontiguousarray(np.stack(rows).astype(x.dtype))
    out["attention_mask"] = np.ones((batch, sequence), dtype=mask.dtype)
    return out


def bench_points(p: BenchSpec) -> list[tuple[str, int, int | None]]:
    """(result key, batch size, sequence length or None) for every measurement the bench section asks: ``"8"``
    per batch size, or ``"8x128"`` per batch size and sequence length."""
    if not p.sequence_lengths:
        return [(str(bs), bs, None) for bs in p.batch_sizes]
    return [(f"{bs}x{seq}", bs, seq) for bs in p.batch_sizes for seq in p.sequence_lengths]


@register
class OrtBenchmarkStep(Step):
    """Times one variant per batch size with the target's runtime; the CPU model is part of its key."""

    kind = "benchmark.ort"
    # 2: one variant per node, fed with evaluation samples; 3: runs until the p50's CI is narrow; 4: sequence lengths;
    # 5: host_load records the peak load and CPU pressure during the runs, and whether the machine was busy
    version = 5
    Params = BenchmarkParams
    inputs = ("model", "data")
    outputs = {"latency": "latency.json"}
    libraries = ("onnxruntime", "numpy")
    host_dependent = True
    deterministic = False
    # What times the runs: ``measure``'s clock (tests give a fake one, so the stopping rules are checked on
    # run times they choose rather than on this machine's speed).
    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def open_session(self, path, runtime: dict[str, Any]):
        """The session this step runs: ONNX Runtime (a target's own runtime step overrides it)."""
        return session(path, runtime)

    def run(self, ctx: StepContext, p: BenchmarkParams) -> dict[str, Any]:
        inputs, _ = load_samples(ctx.inputs["data"])
        sess = self.open_session(ctx.inputs["model"], p.runtime)
        fixed = session_fixed_batch(sess)
        if fixed and set(p.batch_sizes) != {fixed}:
            raise BadInput(f"the model's batch dimension is fixed at {fixed}; export it with a dynamic batch "
                           f"or set bench.batch_sizes=[{fixed}]", key="bench.batch_sizes")
        if p.sequence_lengths and "attention_mask" not in inputs:
            raise BadInput("sequence lengths apply to token models (an attention_mask input); this model takes "
                           f"{sorted(inputs)}", key="bench.sequence_lengths")
        probe = LoadProbe()
        result: dict[str, Any] = {}
        for point, bs, seq in bench_points(p):
            feed = feed_of(inputs, bs, seq)
            for _ in range(p.warmup):
                sess.run(None, feed)
            label = f"batch {bs}" + (f", {seq} tokens" if seq else "")
            m = measure(functools.partial(sess.run, None, feed), p.iterations, p.ci_width, p.max_seconds,
                        progress=lambda it, label=label: ctx.track(it, None, label), clock=self.clock)
            result[point] = m.summary()
            probe.sample()
            if not m.ci_reached:
                s = result[point]
                width = relative_half_width(s["p50"], tuple(s["p50_ci"]))
                load = f"1-minute load average {probe.before:.2f}" if probe.before is not None else "load unknown"
                ctx.note(f"{label}: p50 {s['p50']} ms, 95% CI +-{width * 100:.1f}% after {s['runs']} runs in "
                         f"{s['seconds']:.1f} s; the +-{p.ci_width * 100:g}% target was not reached within "
                         f"bench.max_seconds={p.max_seconds:g} ({load} on {probe.cores} cores)")
        # A measurement taken while something else ran shows up as a high load or CPU pressure.
        result["host_load"] = probe.summary()
        if result["host_load"]["busy"]:
            ctx.note(f"measured on a busy machine: {result['host_load']['busy']}")
        ctx.out("latency").write_text(json.dumps(result, indent=2))
        return result
