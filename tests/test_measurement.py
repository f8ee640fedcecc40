"""Latency with error bars: the median's CI, timing to a CI target or a time budget, speed-ups judged against
the noise (report.json, report.md, the CLI's closing line), the noise-aware Pareto front, and --remeasure."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

import qcompile
from qcompile.errors import BadInput
from qcompile.graph import Node, Plan, Ref, StepOutcome
from qcompile.recipe.schema import BenchSpec
from qcompile.report.build_report import make_report, speed_text, speed_verdict, write_markdown
from qcompile.report.pareto import ci_keys, pareto_front, reference_points
from qcompile.report.sweep import collect_sweep, write_sweep_report
from qcompile.steps.base import Step, StepContext, StepParams, register
from qcompile.steps.benchmark import (
    BenchmarkParams,
    OrtBenchmarkStep,
    measure,
    median_ci,
    median_ci_ranks,
    relative_half_width,
)

from .conftest import run_cli
from .test_sweep_report import make_job, table_rows
from .test_sweep_report import make_report as sweep_report

# --- the median's confidence interval ---------------------------------------------------------------------------

def test_median_ci_on_hand_checked_data():
    # n = 100: 50 -/+ 1.96 * 10 / 2 = 40.2 and 1 + 59.8 = 60.8, rounded outwards: ranks 40 and 61.
    assert median_ci_ranks(100) == (40, 61)
    data = list(range(1, 101))
    random.Random(0).shuffle(data)  # order statistics: the input order must not matter
    assert median_ci(data) == (40.0, 61.0)
    # n = 25: 12.5 -/+ 4.9 -> ranks 7 and 19 of the sorted values 10, 20, ..., 250.
    assert median_ci_ranks(25) == (7, 19)
    assert median_ci([10.0 * k for k in range(25, 0, -1)]) == (70.0, 190.0)
    # Tiny samples clamp to [min, max]; a single run is its own interval.
    assert median_ci_ranks(6) == (1, 6) and median_ci_ranks(1) == (1, 1)
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)
    with pytest.raises(ValueError):
        median_ci([])


# --- timing until the CI is narrow, or the budget is spent ------------------------------------------------------
# The stopping rules are checked on run times the tests choose: a fake clock that moves only when a run says how
# long it took, so no verdict depends on this machine's speed, load or timer. Durations are whole multiples of a
# power of two, so the clock's sums are exact and the run counts and seconds can be asserted exactly.

TICK = 2.0 ** -10  # seconds (0.977 ms)
TICK_MS = TICK * 1e3


class FakeClock:
    """``clock()`` reads the time; ``run(durations)`` is a run function that advances it by the next duration."""

    def __init__(self, start: float = 1000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def run(self, durations):
        it = iter(durations)
        return lambda: self.advance(next(it))


def alternating(a: int, b: int):
    """Ticks a, b, a, b, ... forever, in seconds: two equally likely durations, whose median CI spans both modes
    whatever the run count, so a +-5% target is never met."""
    while True:
        yield a * TICK
        yield b * TICK


def check_points(min_runs: int, upto: int) -> list[int]:
    """The run counts at which ``measure`` judges the CI: from max(min_runs, 6), then each time the count has
    grown by 10% (at least by one)."""
    points = [max(min_runs, 6)]
    while points[-1] < upto:
        n = points[-1]
        points.append(max(n + 1, math.ceil(n * 1.1)))
    return points


def width(times: list[float]) -> float:
    return relative_half_width(float(np.percentile(times, 50)), median_ci(times))


def test_measure_stops_at_the_time_budget_and_says_the_target_was_missed():
    # 1 and 4 ticks in turn: the CI straddles both modes, so only the 0.3 s budget ends the timing. After 123 runs
    # the clock reads 306 ticks (0.2988 s), after 124 runs 310 ticks (0.3027 s): the budget is spent at run 124.
    clock = FakeClock()
    m = measure(clock.run(alternating(1, 4)), min_runs=5, ci_width=0.05, max_seconds=0.3, clock=clock)
    assert m.ci_reached is False
    assert m.times_ms == [TICK_MS, 4 * TICK_MS] * 62
    assert m.seconds == 310 * TICK  # the timed runs' own time, as the clock saw it
    assert median_ci(m.times_ms) == (TICK_MS, 4 * TICK_MS)  # the interval spans both modes
    s = m.summary()
    assert s["runs"] == 124 and s["ci_reached"] is False and s["seconds"] == round(310 * TICK, 3)
    lo, hi = s["p50_ci"]
    assert lo < s["p50"] < hi and width(m.times_ms) > 0.05


def test_measure_counts_the_time_between_runs_against_the_budget():
    # 1 and 4 ticks in turn, with 3 ticks between runs (what the progress bar and the CI checks cost): the budget
    # is the clock's time since the start, not the sum of run times. 19 runs end at tick 46 + 18 * 3 = 100,
    # 20 runs at tick 50 + 19 * 3 = 107, past the 0.1 s budget (102.4 ticks).
    clock = FakeClock()

    def progress(runs):
        for i in runs:
            if i:
                clock.advance(3 * TICK)
            yield i

    m = measure(clock.run(alternating(1, 4)), min_runs=1, ci_width=0.05, max_seconds=0.1, progress=progress,
                clock=clock)
    assert m.ci_reached is False
    assert m.times_ms == [TICK_MS, 4 * TICK_MS] * 10  # the time between runs is not run time
    assert m.seconds == 107 * TICK


def test_measure_honours_the_minimum_even_past_the_budget():
    clock = FakeClock()
    m = measure(clock.run(alternating(1, 4)), min_runs=20, ci_width=0.05, max_seconds=1e-6, clock=clock)
    assert len(m.times_ms) == 20 and m.ci_reached is False and m.seconds == 50 * TICK


def test_measure_never_claims_the_target_from_fewer_than_six_runs():
    # Identical run times (an interval of zero width) but the budget ends the timing after 3 runs: with fewer than
    # 6 runs not even [min, max] covers the median with 95% probability, so the target counts as missed.
    clock = FakeClock()
    m = measure(clock.run(iter(lambda: 2 * TICK, None)), min_runs=3, ci_width=0.05, max_seconds=5 * TICK,
                clock=clock)
    assert len(m.times_ms) == 3 and m.ci_reached is False and m.seconds == 6 * TICK


def test_measure_stops_at_the_first_check_once_times_are_steady():
    for min_runs, expected in ((10, 10), (3, 6), (6, 6)):
        clock = FakeClock()
        m = measure(clock.run(iter(lambda: 2 * TICK, None)), min_runs=min_runs, ci_width=0.05, max_seconds=20,
                    clock=clock)
        assert m.ci_reached is True and len(m.times_ms) == expected, min_runs
        assert m.seconds == expected * 2 * TICK and m.summary()["p50_ci"] == [round(2 * TICK_MS, 4)] * 2


def test_measure_stops_once_the_ci_is_narrow_enough():
    # Run times spread evenly over 1-4 ms (in microsecond-sized steps of 2**-20 s, so sums stay exact): the CI of
    # the median narrows as runs accumulate and meets +-5% after several hundred runs, long before the budget.
    rng = random.Random(0)
    durations = [rng.randint(1000, 4000) * 2.0 ** -20 for _ in range(20_000)]
    clock = FakeClock()
    m = measure(clock.run(durations), min_runs=10, ci_width=0.05, max_seconds=20, clock=clock)
    n = len(m.times_ms)
    assert m.ci_reached is True
    points = check_points(10, n)
    assert n == points[-1] and n > 100, "stopped at a check point, well past the minimum"
    assert width(m.times_ms) <= 0.05
    assert width(m.times_ms[:points[-2]]) > 0.05, "and at the first check point that met the target"
    assert m.seconds == sum(durations[:n]) < 20  # stopped by the target, not the budget
    s = m.summary()
    lo, hi = s["p50_ci"]
    assert s["ci_reached"] is True and s["runs"] == n
    assert lo <= s["p50"] <= hi and max(s["p50"] - lo, hi - s["p50"]) <= 0.05 * s["p50"] + 1e-4


def _tiny_model(path: Path) -> Path:
    """A one-MatMul ONNX model with a dynamic batch: something real for ORT to time, in milliseconds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 4)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


class _TimedSession:
    """A real ORT session whose runs take the time the test says, on the step's fake clock (its other attributes,
    such as the inputs' shapes, are the real session's)."""

    def __init__(self, real, clock: FakeClock, durations: list[float]):
        self.real, self.clock, self.durations, self.calls = real, clock, durations, 0

    def run(self, names, feed):
        out = self.real.run(names, feed)
        self.clock.advance(self.durations[self.calls % len(self.durations)])
        self.calls += 1
        return out

    def __getattr__(self, name):
        return getattr(self.real, name)


def _benchmark_step(durations: list[float] | None) -> OrtBenchmarkStep:
    """The benchmark step as the build runs it; with ``durations``, every run takes those times in turn on a
    fake clock (warm-up runs included)."""
    if durations is None:
        return OrtBenchmarkStep()
    clock = FakeClock()

    class FakeTimed(OrtBenchmarkStep):  # not registered: only this test runs it
        def open_session(self, path, runtime):
            return _TimedSession(super().open_session(path, runtime), clock, durations)

    FakeTimed.clock = clock
    return FakeTimed()


def _run_benchmark(tmp_path: Path, durations: list[float] | None = None, **params) -> tuple[dict, dict, list[str]]:
    from qcompile.steps.arrays import save_samples

    save_samples(tmp_path / "samples.npz", {"x": np.ones((8, 16), np.float32)})
    work = tmp_path / "work"
    work.mkdir()
    ctx = StepContext(inputs={"model": _tiny_model(tmp_path / "m.onnx"), "data": tmp_path / "samples.npz"},
                      workdir=work, outputs=dict(OrtBenchmarkStep.outputs))
    p = BenchmarkParams(**{"batch_sizes": [1, 4], "warmup": 2, "iterations": 5, "runtime": {"threads": 1}, **params})
    result = _benchmark_step(durations).run(ctx, p)
    return result, json.loads(ctx.out("latency").read_text()), ctx.notes


def test_benchmark_step_with_real_timings_records_the_ci_runs_and_machine_load(tmp_path):
    """Real ORT runs on the real clock: whether the CI target is met depends on the machine, so only what holds on
    every machine is checked, including that a missed target is always noted and a met one never."""
    result, written, notes = _run_benchmark(tmp_path, ci_width=0.5, max_seconds=1.0)
    assert written == result and set(result) == {"1", "4", "host_load"}
    missed = []
    for bs in ("1", "4"):
        lat = result[bs]
        assert isinstance(lat["ci_reached"], bool) and lat["runs"] >= 5
        assert lat["p50_ci"][0] <= lat["p50"] <= lat["p50_ci"][1] and 0 < lat["p50"] <= lat["p90"] <= lat["p99"]
        if lat["ci_reached"]:
            assert lat["runs"] >= 6, "the target is never claimed from fewer than 6 runs"
        else:
            missed.append(bs)
    # A busy machine adds its own note; the CI notes are the rest.
    ci_notes = [n.split(":")[0] for n in notes if not n.startswith("measured on a busy")]
    assert ci_notes == [f"batch {bs}" for bs in missed]
    load = result["host_load"]
    assert load["cores"] >= 1 and load["loadavg_max"] >= load["loadavg_before"] >= 0
    assert (load["busy"] is None) == (not any(n.startswith("measured on a busy machine") for n in notes))


def test_benchmark_step_that_meets_its_target_records_ci_reached(tmp_path, monkeypatch):
    # Every run takes 2 ticks: the interval has zero width at the first check, after 6 runs (5 asked for). A quiet
    # machine is set too, so no busy-machine note can appear whatever else this machine runs.
    monkeypatch.setattr("os.getloadavg", lambda: (0.1, 0.1, 0.1))
    monkeypatch.setattr("qcompile.steps.host_load.PSI_CPU", tmp_path / "no-psi")
    result, _, notes = _run_benchmark(tmp_path, [2 * TICK], ci_width=0.05, max_seconds=10.0)
    for bs in ("1", "4"):
        lat = result[bs]
        assert lat["ci_reached"] is True and lat["runs"] == 6 and lat["seconds"] == round(12 * TICK, 3)
        assert lat["p50"] == lat["p99"] == round(2 * TICK_MS, 4) and lat["p50_ci"] == [lat["p50"]] * 2
    assert notes == []


def test_benchmark_step_that_hits_its_budget_records_ci_not_reached(tmp_path, monkeypatch):
    # 1 and 4 ticks in turn never meet +-5%: each batch size stops at its 0.2 s budget, which 82 runs (41 pairs,
    # 205 ticks = 0.2002 s) spend and 81 runs (201 ticks) do not. The load is fixed, so the note is exact.
    monkeypatch.setattr("os.getloadavg", lambda: (3.5, 2.0, 1.0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr("qcompile.steps.host_load.PSI_CPU", tmp_path / "no-psi")
    result, written, notes = _run_benchmark(tmp_path, [TICK, 4 * TICK], ci_width=0.05, max_seconds=0.2)
    for bs in ("1", "4"):  # 2 warm-up runs before each batch size: each starts on a 1-tick run
        lat = result[bs]
        assert lat["ci_reached"] is False and lat["runs"] == 82 and lat["seconds"] == 0.2
        assert lat["p50"] == round(2.5 * TICK_MS, 4) and lat["p50_ci"] == [round(TICK_MS, 4), round(4 * TICK_MS, 4)]
    busy = "1-minute load average up to 3.50 on 2 cores"
    assert notes == [f"batch {bs}: p50 2.4414 ms, 95% CI +-60.0% after 82 runs in 0.2 s; the +-5% target was not "
                     "reached within bench.max_seconds=0.2 (1-minute load average 3.50 on 2 cores)" for bs in (1, 4)] \
        + [f"measured on a busy machine: {busy}"]
    assert result["host_load"] == {"loadavg_before": 3.5, "loadavg_max": 3.5, "loadavg_after": 3.5,
                                   "cpu_pressure": None, "cpu_stall_s": None, "cores": 2, "busy": busy}
    assert written == result


def test_bench_fields_validate():
    assert (BenchSpec().ci_width, BenchSpec().max_seconds) == (0.05, 10.0)
    for bad in ({"ci_width": 0}, {"ci_width": 1}, {"ci_width": -0.1}, {"max_seconds": 0}, {"max_seconds": -1}):
        with pytest.raises(ValidationError):
            BenchSpec(**bad)
    r = qcompile.load_recipe("demo", ["bench.ci_width=0.02", "bench.max_seconds=3"])
    assert (r.bench.ci_width, r.bench.max_seconds) == (0.02, 3.0)
    with pytest.raises(BadInput, match="ci_width"):
        qcompile.load_recipe("demo", ["bench.ci_width=1.5"])


# --- speed-ups judged against the noise -------------------------------------------------------------------------

def lat(p50: float, lo: float | None, hi: float | None, reached: bool = True) -> dict:
    d = {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "mean": p50 * 1.02}
    if lo is not None:
        d.update(p50_ci=[lo, hi], runs=300, ci_reached=reached)
    return d


def test_verdict_for_separated_and_overlapping_intervals():
    ref = lat(1.0, 0.98, 1.02)
    assert speed_verdict(ref, lat(0.43, 0.42, 0.44)) == "faster"
    assert speed_verdict(ref, lat(1.4, 1.37, 1.43)) == "slower"
    assert speed_verdict(ref, lat(1.01, 1.0, 1.03)) == "no measurable difference"  # overlaps at the top
    assert speed_verdict(ref, lat(0.97, 0.95, 0.98)) == "no measurable difference"  # touching bounds overlap
    assert speed_verdict(ref, lat(0.5, None, None)) is None  # an old latency.json: no CI, no verdict
    assert speed_text(2.3125, "faster", "fp32") == "2.31x faster than fp32"
    assert speed_text(1 / 1.4, "slower", "fp32") == "1.40x slower than fp32"  # never "0.71x faster"
    assert speed_text(0.99, "no measurable difference") == "no measurable difference"
    assert speed_text(0.84, None, "fp32") == "0.84x the speed of fp32 (no CI)"
    assert speed_text(1.003, "faster") == "1.003x faster"  # a real difference is not printed as 1.00x


def _report(int8: dict, fp32: dict) -> dict:
    """make_report over hand-made step outcomes: fp32 and int8, evaluated, timed and compared."""
    nodes = {v: {"evaluate": f"evaluate.{v}", "benchmark": f"benchmark.{v}"} for v in ("fp32", "int8")}
    nodes["int8"]["compare"] = "compare.int8"
    lock = {"build_id": "0123456789abcdef", "recipe": {"name": "demo", "target": {"kind": "ort_cpu"}},
            "variants": {v: {"scheme": {"kind": v}, "reference": v == "fp32", "nodes": nodes[v],
                             "artifact": f"model.{v}.onnx"} for v in ("fp32", "int8")}}
    load = {"loadavg_before": 0.5, "loadavg_max": 0.6, "loadavg_after": 0.6, "cpu_pressure": 0.01, "cores": 2,
            "busy": None}
    outcomes = [StepOutcome("evaluate.fp32", "evaluate.ort", "k1", "ran", result={"scores": {"top1": 0.98},
                                                                                   "samples": 1000}),
                StepOutcome("evaluate.int8", "evaluate.ort", "k2", "ran", result={"scores": {"top1": 0.979}}),
                StepOutcome("benchmark.fp32", "benchmark.ort", "k3", "ran", result={**fp32, "host_load": load}),
                StepOutcome("benchmark.int8", "benchmark.ort", "k4", "ran", result={**int8, "host_load": load}),
                StepOutcome("compare.int8", "compare.outputs", "k5", "ran",
                            result={"fidelity": {"top1_agreement": 0.995, "cosine_mean": 0.9999,
                                                 "cosine_min": 0.99}, "drop": {"top1": 0.001}})]
    arts = [{"path": f"artifacts/model.{v}.onnx", "size_bytes": s, "sha256": "ab" * 32, "step": "x"}
            for v, s in (("fp32", 1_700_000), ("int8", 450_000))]
    return make_report(lock, outcomes, arts)


def test_report_for_a_slower_variant_says_slower(tmp_path, capsys):
    from qcompile.build_command import print_outcome
    from qcompile.builds.build import BuildResult

    fp32 = {"1": lat(0.05, 0.049, 0.051), "8": lat(0.20, 0.196, 0.204)}
    int8 = {"1": lat(0.07, 0.068, 0.072), "8": lat(0.201, 0.195, 0.21, reached=False)}
    report = _report(int8, fp32)
    assert report["speedup_p50"]["int8"] == {"1": 0.714, "8": 0.995}
    assert report["speedup_verdict"]["int8"] == {"1": "slower", "8": "no measurable difference"}
    assert set(report["metrics"]["int8"]["latency_ms"]) == {"1", "8"}  # host_load is not a batch size
    assert report["metrics"]["int8"]["host_load"]["cores"] == 2
    write_markdown(report, tmp_path / "report.md")
    md = (tmp_path / "report.md").read_text()
    assert "int8 latency vs fp32 (p50): batch 1: 1.40x slower, batch 8: no measurable difference." in md
    assert "faster" not in md and "0.71" not in md
    assert "| 0.07 [0.068, 0.072] | 0.201 [0.195, 0.21] † |" in md  # p50 [CI], † target missed
    assert "fp32 0.50 → 0.60" in md and "busy" not in md  # load while timing

    print_outcome(BuildResult(tmp_path, report["build_id"], report, []))
    line = capsys.readouterr().out
    assert "int8 latency at batch 1: 1.40x slower than fp32, at batch 8: no measurable difference from fp32" in line
    assert "faster" not in line


def test_report_for_a_faster_variant_and_for_old_latency_without_ci(tmp_path):
    fast = _report({"1": lat(0.0216, 0.021, 0.022)}, {"1": lat(0.05, 0.049, 0.051)})
    assert fast["speedup_verdict"]["int8"] == {"1": "faster"}
    write_markdown(fast, tmp_path / "fast.md")
    assert "batch 1: 2.31x faster." in (tmp_path / "fast.md").read_text()
    # latency.json from before CIs: still renders, with the ratio and no verdict.
    old = _report({"1": lat(0.0595, None, None)}, {"1": lat(0.05, None, None)})
    assert old["speedup_verdict"]["int8"] == {"1": None}
    write_markdown(old, tmp_path / "old.md")
    md = (tmp_path / "old.md").read_text()
    assert "batch 1: 0.84x the speed (no CI)." in md and "faster" not in md and "| 0.0595 |" in md


# --- the noise-aware Pareto front and the plot's reference --------------------------------------------------------

def test_pareto_front_compares_latency_beyond_the_noise(tmp_path):
    rows = [{"q": 0.960, "l": 0.0300, "lo": 0.0294, "hi": 0.0306},
            {"q": 0.958, "l": 0.0295, "lo": 0.0289, "hi": 0.0301},  # 1.7% quicker than 0: inside the noise
            {"q": 0.950, "l": 0.0200, "lo": 0.0196, "hi": 0.0204},  # measurably quicker than both
            {"q": 0.960, "l": 0.0302, "lo": 0.0290, "hi": 0.0310}]  # 0's quality, latency a tie with 0
    # With CIs: 1 is less accurate than 0 and not measurably faster, so 0 dominates it; 3 ties 0 (same quality,
    # overlapping CIs) so both stay; 2 buys its lower accuracy with a real speed-up.
    assert pareto_front(rows, "q", "l", ("lo", "hi")) == {0, 2, 3}
    # Without CIs (plain p50s) 1 is faster than 0 and 3 slower than 0: the classic front.
    assert pareto_front(rows, "q", "l") == {0, 1, 2}
    # A row without CI bounds is compared by p50 (old reports in the same sweep).
    assert pareto_front([rows[0], {"q": 0.958, "l": 0.0295}], "q", "l", ("lo", "hi")) == {0, 1}


def test_sweep_star_follows_the_noise_and_plot_shows_the_reference(tmp_path):
    d = tmp_path / "sweep"
    make_job(d, 0, ["quant.per_channel=true"], sweep_report(0.960, 0.0300, 450_000))
    make_job(d, 1, ["quant.per_channel=false"], sweep_report(0.958, 0.0295, 440_000))  # inside 0's +-2%
    make_job(d, 2, ["quant.per_channel=maybe"], sweep_report(0.950, 0.0200, 430_000))
    paths = write_sweep_report(d)
    assert [t["pareto"] for t in table_rows(paths["md"].read_text())] == ["★", "", "★"]
    rows = collect_sweep(d)
    assert ci_keys("p50_ms_bs1") == ("p50_ci_lo_ms_bs1", "p50_ci_hi_ms_bs1")
    # Every job shares one FP32 measurement: one reference point, at FP32's accuracy, with its CI.
    assert reference_points(rows, "accuracy", "p50_ms_bs1") == [(0.05, 0.049, 0.051, pytest.approx(96.2))]
    assert reference_points(rows, "cosine_mean", "p50_ms_bs8") == [(0.2, 0.196, 0.204, 1.0)]
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The same numbers from reports without CIs: the classic front stars job 1 too.
    old = tmp_path / "old"
    for job, (acc, p50) in enumerate(((0.960, 0.0300), (0.958, 0.0295), (0.950, 0.0200))):
        make_job(old, job, [f"j={job}"], sweep_report(acc, p50, 440_000, ci=None))
    assert [t["pareto"] for t in table_rows(write_sweep_report(old)["md"].read_text())] == ["★", "★", "★"]


# --- --remeasure ------------------------------------------------------------------------------------------------

class _Params(StepParams):
    tag: str


@register
class _Produce(Step):
    """A deterministic step (stands in for export/quantize): writes its tag."""

    kind = "test.produce"
    Params = _Params
    outputs = {"out": "out.txt"}

    def run(self, ctx, p):
        ctx.out("out").write_text(p.tag)
        return {"tag": p.tag}


_READINGS = itertools.count(1)


@register
class _Clock(Step):
    """A measurement (host_dependent): records which of this process's runs of it made the reading (a counter, not
    a clock, whose resolution could make two runs look simultaneous)."""

    kind = "test.clock"
    Params = _Params
    inputs = ("src",)
    outputs = {"reading": "reading.json"}
    host_dependent = True
    deterministic = False

    def run(self, ctx, p):
        reading = {"at": next(_READINGS), "src": ctx.inputs["src"].read_text()}
        ctx.out("reading").write_text(json.dumps(reading))
        return reading


def test_execute_remeasure_reruns_only_host_dependent_steps(tmp_path):
    from qcompile.cache import Cache
    from qcompile.run.scheduler import execute

    plan = Plan()
    plan.add(Node("produce", _Produce.kind, _Params(tag="a")))
    plan.add(Node("measure", _Clock.kind, _Params(tag="m"), inputs={"src": Ref("produce", "out")}))
    cache = Cache(tmp_path / "cache")

    def run(**kw) -> dict[str, StepOutcome]:
        return {o.name: o for o in execute(plan, cache, **kw)}

    first = run()
    assert [o.status for o in first.values()] == ["ran", "ran"]
    cached = run()
    assert [o.status for o in cached.values()] == ["cached", "cached"]
    again = run(remeasure=True)
    assert again["produce"].status == "cached" and again["measure"].status == "ran"
    assert again["measure"].result["at"] > first["measure"].result["at"]
    # The new measurement replaced the old one in the cache: the next plain build reuses it.
    after = run()
    assert after["measure"].status == "cached" and after["measure"].result == again["measure"].result


SMALL = ["model.train.epochs=1", "eval.max_accuracy_drop=1", "data.eval_samples=64", "quant.calibration.samples=16",
         "bench.batch_sizes=[1]", "bench.warmup=1", "bench.iterations=3", "bench.max_seconds=1"]


def test_cli_remeasure_reruns_exactly_the_measurements(cache_dir, tmp_path):
    first = run_cli("build", *SMALL, "hydra.run.dir=a", cache=cache_dir, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_cli("build", "--remeasure", *SMALL, "hydra.run.dir=b", cache=cache_dir, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    plain = run_cli("build", *SMALL, "hydra.run.dir=c", cache=cache_dir, cwd=tmp_path)
    assert plain.returncode == 0, plain.stderr[-3000:]
    a, b, c = (json.loads((tmp_path / x / "report.json").read_text()) for x in "abc")
    steps = {s["name"]: s["status"] for s in b["steps"]}
    timed = {"benchmark.fp32", "benchmark.int8", "speedup.int8"}
    assert {n for n, s in steps.items() if s == "ran"} == timed, steps
    assert {n for n, s in steps.items() if s != "ran"} == {s["name"] for s in a["steps"]} - timed
    assert all(s == "cached" for n, s in steps.items() if n not in timed)
    # The re-measurement replaced the cached one: the next plain build reports it, everything cached.
    assert all(s["status"] == "cached" for s in c["steps"])
    assert c["metrics"]["int8"]["latency_ms"] == b["metrics"]["int8"]["latency_ms"]
    assert c["speedup_ci"] == b["speedup_ci"]
    for rep in (a, b):
        lat = rep["metrics"]["int8"]["latency_ms"]["1"]
        assert lat["runs"] >= 3 and lat["p50_ci"][0] <= lat["p50"] <= lat["p50_ci"][1]
        assert rep["speedup_verdict"]["int8"]["1"] in ("faster", "slower", "no measurable difference")
    assert "--remeasure" not in (tmp_path / "b" / "overrides.yaml").read_text()


# --- a user file edited while a build reads it ----------------------------------------------------------------

class _FileParams(StepParams):
    path: str


@register
class _ReadsAndEdits(Step):
    """Reads a user file, which someone edits before the step is done (the scheduler must notice)."""

    kind = "test.reads_and_edits"
    Params = _FileParams
    outputs = {"out": "out.txt"}
    file_fields = ("path",)

    def run(self, ctx, p):
        text = Path(p.path).read_text()
        ctx.out("out").write_text(text.upper())
        Path(p.path).write_text(text + " edited")  # the user's editor saves mid-build
        return {}


def test_a_user_file_edited_mid_step_is_not_stored_under_its_old_key(tmp_path):
    from qcompile.cache import Cache
    from qcompile.errors import BadInput
    from qcompile.run.scheduler import execute

    user_file = tmp_path / "weights.txt"
    user_file.write_text("v1")
    plan = Plan()
    plan.add(Node("model", _ReadsAndEdits.kind, _FileParams(path=str(user_file))))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(BadInput, match="changed while the build was reading it"):
        execute(plan, cache)
    assert not [p for p in (tmp_path / "cache" / "actions").rglob("*") if p.is_file()]
