"""A variant's speed-up over its reference, timed as a pair.

Latency steps time each variant once, alone, at its own moment; on a shared machine two such moments can differ
by more than the variant's gain, so a ratio of two separately measured p50s can flip from "2x faster" to "5x slower"
between runs. Here the reference and the variant are timed in alternating blocks within one measurement (ABBA
order, so a drift in the machine's speed cancels), each block pair gives one ratio, and the verdict comes from the
distribution-free 95% interval of the median ratio: whatever slows the machine during a block pair slows both
sides of its ratio.

Two ways to keep the two sessions from disturbing each other (``pairing``):
- ``interleaved``: both sessions alive, their thread pools not spinning between runs (a spinning pool takes the
  CPU from the other session's runs);
- ``one_alive``: only the session being timed exists; each block creates, warms and drops it (the runtime's
  deployed settings, spinning included, at the cost of a session creation per block).
``benchmarks/paired_speedup.py`` compares both (docs/measurement.md): ``one_alive`` is the default, because with
spinning off the ratio drifts from the deployed one (a tiny CNN at batch 1: 1.10x interleaved against 1.21x one at
a time and 1.18x timed apart on a quiet machine).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

from .base import Step, StepContext, register
from .benchmark import (
    MIN_RUNS_FOR_CI,
    BenchmarkParams,
    bench_points,
    feed_of,
    median_ci,
    relative_half_width,
    session_fixed_batch,
)
from .host_load import LoadProbe
from .ort_session import session

FASTER, SLOWER, NO_DIFFERENCE = "faster", "slower", "no measurable difference"
# A block should last about this long: long enough that its median is not one scheduler hiccup, short enough that
# the machine's state barely changes between the two blocks of a pair.
BLOCK_SECONDS = 0.05
# With one session alive at a time each block pays a session's creation (0.16 s for ResNet-50 FP32 on 2 cores):
# longer blocks keep that a minor share of the pair's time.
ONE_ALIVE_BLOCK_SECONDS = 0.25
MAX_RUNS_PER_BLOCK = 25
REFERENCE, VARIANT = 0, 1


class SpeedupParams(BenchmarkParams):
    """The bench section and the target's runtime, as for the latency steps, plus how the pair is timed."""

    pairing: Literal["interleaved", "one_alive"] = "one_alive"


@dataclass
class PairMeasurement:
    """Block ratios (reference time over variant time, so above 1 the variant is quicker) and the block times."""

    ratios: list[float]
    runs_per_block: int
    reference_ms: list[float] = field(default_factory=list)
    variant_ms: list[float] = field(default_factory=list)
    ci_reached: bool = False
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The speed-up (median block ratio), its 95% CI, the verdict and what it came from."""
        import numpy as np

        lo, hi = median_ci(self.ratios) if self.ratios else (math.nan, math.nan)
        enough = len(self.ratios) >= MIN_RUNS_FOR_CI
        return {"speedup": round(float(np.median(self.ratios)), 4), "ci": [round(lo, 4), round(hi, 4)],
                "verdict": verdict((lo, hi)) if enough else None, "blocks": len(self.ratios),
                "runs_per_block": self.runs_per_block,
                "reference_p50": round(float(np.median(self.reference_ms)), 4),
                "variant_p50": round(float(np.median(self.variant_ms)), 4),
                "ci_reached": self.ci_reached, "seconds": round(self.seconds, 3)}


def verdict(ci: tuple[float, float]) -> str:
    """"faster" when the speed-up's whole interval lies above 1, "slower" when below, else no measurable
    difference."""
    if ci[0] > 1:
        return FASTER
    if ci[1] < 1:
        return SLOWER
    return NO_DIFFERENCE


def runs_per_block(seconds_per_run: float, block_seconds: float = BLOCK_SECONDS) -> int:
    """Runs per block so that a block lasts about ``block_seconds`` (1 to ``MAX_RUNS_PER_BLOCK``)."""
    if seconds_per_run <= 0:
        return MAX_RUNS_PER_BLOCK
    return max(1, min(MAX_RUNS_PER_BLOCK, round(block_seconds / seconds_per_run)))


def measure_pair(block: Callable[[int, int], list[float]], per_block: int, min_runs: int, ci_width: float,
                 max_seconds: float, between: Callable[[], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> PairMeasurement:
    """Time the reference and the variant in alternating blocks until the speed-up's 95% CI is within
    +-``ci_width`` of it, or ``max_seconds`` have passed once each side had ``min_runs`` runs.

    ``block(which, n)`` runs model ``which`` (``REFERENCE`` or ``VARIANT``) ``n`` times and returns the run times
    in ms. Block pairs alternate their order (reference first, then variant first), so a steady drift in the
    machine's speed favours neither side. ``between`` is called after each block pair (a load probe's sample).
    """
    import numpy as np

    m = PairMeasurement([], per_block)
    min_blocks = max(MIN_RUNS_FOR_CI, math.ceil(min_runs / per_block))
    start = clock()
    for i in itertools.count():
        times = {}
        for which in ((REFERENCE, VARIANT) if i % 2 == 0 else (VARIANT, REFERENCE)):
            times[which] = block(which, per_block)
        m.reference_ms += times[REFERENCE]
        m.variant_ms += times[VARIANT]
        ref, var = float(np.median(times[REFERENCE])), float(np.median(times[VARIANT]))
        m.ratios.append(ref / var if var > 0 else math.inf)
        if between:
            between()
        n = len(m.ratios)
        if n >= min_blocks:
            ratio = float(np.median(m.ratios))
            if relative_half_width(ratio, median_ci(m.ratios)) <= ci_width:
                m.ci_reached = True
                break
            if clock() - start >= max_seconds:
                break
    m.seconds = clock() - start
    return m


@register
class OrtSpeedupStep(Step):
    """Times the reference and a variant as a pair, per batch size, on the target's runtime."""

    kind = "speedup.ort"
    version = 2  # 2: one session alive at a time by default, in blocks of about 0.25 s
    Params = SpeedupParams
    inputs = ("reference", "model", "data")
    outputs = {"speedup": "speedup.json"}
    libraries = ("onnxruntime", "numpy")
    host_dependent = True
    deterministic = False
    clock: Callable[[], float] = staticmethod(time.perf_counter)

    def open_session(self, path, runtime: dict[str, Any], spinning: bool):
        """The session one side of the pair runs (a target's own runtime step overrides it)."""
        return session(path, runtime, spinning=spinning)

    def run(self, ctx: StepContext, p: SpeedupParams) -> dict[str, Any]:
        from .arrays import load_samples

        inputs, _ = load_samples(ctx.inputs["data"])
        paths = {REFERENCE: ctx.inputs["reference"], VARIANT: ctx.inputs["model"]}
        alive = p.pairing == "interleaved"
        sessions = {w: self.open_session(path, p.runtime, spinning=False) for w, path in paths.items()} if alive else {}
        fixed = session_fixed_batch(sessions[VARIANT] if alive else self.open_session(paths[VARIANT], p.runtime, True))
        probe = LoadProbe()
        result: dict[str, Any] = {}
        for point, bs, seq in bench_points(p):
            if fixed and bs != fixed:
                continue  # the latency step already said which batch a fixed-batch model takes
            feed = feed_of(inputs, bs, seq)
            block = self._blocks(sessions, paths, p, feed)
            per_run = max(self._warm(block, p.warmup), default=0.0)
            label = f"speed-up at batch {bs}" + (f", {seq} tokens" if seq else "")
            progress = ctx.track(itertools.count(), None, label)

            def between(progress=progress) -> None:
                probe.sample()
                next(progress)

            per_block = runs_per_block(per_run / 1e3, BLOCK_SECONDS if alive else ONE_ALIVE_BLOCK_SECONDS)
            m = measure_pair(block, per_block, p.iterations, p.ci_width, p.max_seconds, between=between,
                             clock=self.clock)
            progress.close()  # ends the bar now, not when the generator is collected
            result[point] = m.summary()
        result["host_load"] = probe.summary()
        result["pairing"] = p.pairing
        if result["host_load"]["busy"]:
            ctx.note(f"measured on a busy machine: {result['host_load']['busy']}")
        ctx.out("speedup").write_text(json.dumps(result, indent=2))
        return result

    def _warm(self, block: Callable[[int, int], list[float]], warmup: int) -> list[float]:
        """Warm both sides; the slower side's last warm-up run sizes the blocks."""
        return [block(w, max(warmup, 1))[-1] for w in (REFERENCE, VARIANT)]

    def _blocks(self, sessions: dict[int, Any], paths: dict[int, Any], p: SpeedupParams,
                feed: dict[str, Any]) -> Callable[[int, int], list[float]]:
        """``block(which, n)``: n timed runs of one side, on its live session or on one made for the block."""
        clock = self.clock

        def timed(sess, n: int) -> list[float]:
            out = []
            for _ in range(n):
                t0 = clock()
                sess.run(None, feed)
                out.append((clock() - t0) * 1e3)
            return out

        def block(which: int, n: int) -> list[float]:
            if which in sessions:
                return timed(sessions[which], n)
            sess = self.open_session(paths[which], p.runtime, spinning=True)
            sess.run(None, feed)  # the first run of a new session allocates; it is not timed
            try:
                return timed(sess, n)
            finally:
                del sess

        return block
