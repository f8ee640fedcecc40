"""Latency of the FP32 and quantized models on the target, per batch size (p50/p90/p99)."""

from __future__ import annotations

import json
import time
from typing import Any

from ..errors import BadInput
from .arrays import fixed_batch
from .base import Step, StepContext, StepParams, register
from .ort_session import cpu_session


class BenchmarkParams(StepParams):
    input_shape: tuple[int, ...]
    batch_sizes: list[int]
    warmup: int
    iterations: int
    threads: int
    level: str


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    """p50/p90/p99 and mean of latency samples in milliseconds."""
    import numpy as np

    a = np.asarray(samples_ms)
    return {"p50": round(float(np.percentile(a, 50)), 4), "p90": round(float(np.percentile(a, 90)), 4),
            "p99": round(float(np.percentile(a, 99)), 4), "mean": round(float(a.mean()), 4)}


@register
class OrtBenchmark(Step):
    """Times FP32 and quantized models per batch size; the CPU model is part of its key."""

    kind = "benchmark.ort"
    Params = BenchmarkParams
    inputs = ("fp32", "quant")
    outputs = {"latency": "latency.json"}
    libraries = ("onnxruntime", "numpy")
    host_dependent = True
    deterministic = False

    def run(self, ctx: StepContext, p: BenchmarkParams) -> dict[str, Any]:
        import numpy as np

        rng = np.random.default_rng(0)
        result: dict[str, Any] = {}
        for variant in ("fp32", "quant"):
            sess = cpu_session(ctx.inputs[variant], p.threads, p.level)
            name = sess.get_inputs()[0].name
            fixed = fixed_batch(sess.get_inputs()[0].shape)
            if fixed and set(p.batch_sizes) != {fixed}:
                raise BadInput(f"the model's batch dimension is fixed at {fixed}; export it with a dynamic batch "
                               f"or set bench.batch_sizes=[{fixed}]", key="bench.batch_sizes")
            per_batch = {}
            for bs in p.batch_sizes:
                feed = {name: rng.standard_normal((bs, *p.input_shape), dtype=np.float32)}
                for _ in range(p.warmup):
                    sess.run(None, feed)
                times = []
                for _ in ctx.track(range(p.iterations), p.iterations, f"{variant} batch {bs}"):
                    t0 = time.perf_counter()
                    sess.run(None, feed)
                    times.append((time.perf_counter() - t0) * 1e3)
                per_batch[str(bs)] = percentiles(times)
            result[variant] = per_batch
        ctx.out("latency").write_text(json.dumps(result, indent=2))
        return result
