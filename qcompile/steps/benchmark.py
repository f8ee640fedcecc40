"""Latency of one model variant on the target, per batch size (p50/p90/p99), fed with real evaluation samples."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import BadInput
from .arrays import count, load_samples, session_fixed_batch
from .base import Step, StepContext, StepParams, register
from .ort_session import session


class BenchmarkParams(StepParams):
    batch_sizes: list[int]
    warmup: int
    iterations: int
    runtime: dict[str, Any]


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of latency samples in milliseconds."""
    import numpy as np

    a = np.asarray(samples_ms)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4),
            "p99": round(float(np.percentile(a, 99)), 4), "mean": round(float(a.mean()), 4)}


def feed_of(inputs: dict[str, Any], batch: int) -> dict[str, Any]:
    """A batch of ``batch`` real samples (cycled when the evaluation set is smaller)."""
    import numpy as np

    idx = np.arange(batch) % count(inputs)
    return {name: np.ascontiguousarray(x[idx]) for name, x in inputs.items()}


@register
class OrtBenchmark(Step):
    """Times one variant per batch size with the target's runtime; the CPU model is part of its key."""

    kind = "benchmark.ort"
    version = 2  # 2: one variant per node, fed with evaluation samples
    Params = BenchmarkParams
    inputs = ("model", "data")
    outputs = {"latency": "latency.json"}
    libraries = ("onnxruntime", "numpy")
    host_dependent = True
    deterministic = False

    def run(self, ctx: StepContext, p: BenchmarkParams) -> dict[str, Any]:
        inputs, _ = load_samples(ctx.inputs["data"])
        sess = session(ctx.inputs["model"], p.runtime)
        fixed = session_fixed_batch(sess)
        if fixed and set(p.batch_sizes) != {fixed}:
            raise BadInput(f"the model's batch dimension is fixed at {fixed}; export it with a dynamic batch "
                           f"or set bench.batch_sizes=[{fixed}]", key="bench.batch_sizes")
        result: dict[str, Any] = {}
        for bs in p.batch_sizes:
            feed = feed_of(inputs, bs)
            for _ in range(p.warmup):
                sess.run(None, feed)
            times = []
            for _ in ctx.track(range(p.iterations), p.iterations, f"batch {bs}"):
                t0 = time.perf_counter()
                sess.run(None, feed)
                times.append((time.perf_counter() - t0) * 1e3)
            result[str(bs)] = percentiles(times)
        ctx.out("latency").write_text(json.dumps(result, indent=2))
        return result
