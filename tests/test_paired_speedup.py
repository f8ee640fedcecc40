"""Speed-ups timed as pairs, the machine's load recorded with every measurement, and waiting for a quiet machine.

The stopping rules and verdicts are checked on a scripted machine (run times the tests choose, a clock that moves
only when a run says how long it took), so no assertion depends on this machine's speed or load.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from qcompile.graph import StepOutcome
from qcompile.report.build_report import make_report, write_markdown
from qcompile.steps.base import StepContext
from qcompile.steps.host_load import LoadProbe, busy_reason, wait_for_quiet
from qcompile.steps.speedup import (
    REFERENCE,
    VARIANT,
    OrtSpeedupStep,
    PairMeasurement,
    SpeedupParams,
    measure_pair,
    runs_per_block,
    verdict,
)

from .conftest import run_cli
from .test_measurement import FakeClock, _tiny_model


class ScriptedMachine:
    """Two models, the variant ``gain`` times quicker than the reference, on a machine whose speed changes: each
    block runs ``slowdown(block index)`` times slower. ``block(which, n)`` is what ``measure_pair`` calls."""

    def __init__(self, reference_ms: float, gain: float, slowdown, clock: FakeClock):
        self.ms = {REFERENCE: reference_ms, VARIANT: reference_ms / gain}
        self.slowdown, self.clock, self.blocks = slowdown, clock, 0

    def block(self, which: int, n: int) -> list[float]:
        t = self.ms[which] * self.slowdown(self.blocks)
        self.blocks += 1
        self.clock.advance(n * t / 1e3)
        return [t] * n


def test_a_pair_sees_through_a_machine_whose_speed_changes():
    # The machine is 4x slower in every other stretch of 4 blocks (another job starting and stopping). Timed apart,
    # FP32 in a slow stretch and the variant in a quick one read as an 8x gain, or the reverse as a 2x loss; timed
    # as a pair, each block pair mostly shares its stretch and the 2x gain comes out.
    clock = FakeClock()
    machine = ScriptedMachine(10.0, 2.0, lambda i: 4.0 if (i // 4) % 2 else 1.0, clock)
    m = measure_pair(machine.block, per_block=5, min_runs=50, ci_width=0.05, max_seconds=10.0, clock=clock)
    s = m.summary()
    assert s["speedup"] == 2.0 and s["verdict"] == "faster" and s["ci"][0] > 1
    assert s["blocks"] >= 10 and s["runs_per_block"] == 5  # 50 runs a side at least: ceil(50 / 5) blocks
    # The old method on the same machine: one side timed in a slow stretch, the other in a quick one.
    apart = (10.0 * 4) / (5.0 * 1)
    assert apart == 8.0 and 10.0 / (5.0 * 4) == 0.5  # the flip the pair avoids


def test_block_pairs_alternate_their_order():
    order = []
    clock = FakeClock()

    def block(which: int, n: int) -> list[float]:
        order.append(which)
        clock.advance(0.001)
        return [1.0] * n

    measure_pair(block, per_block=1, min_runs=1, ci_width=0.5, max_seconds=1.0, clock=clock)
    assert order[:8] == [REFERENCE, VARIANT, VARIANT, REFERENCE, REFERENCE, VARIANT, VARIANT, REFERENCE]


def test_noisy_ratios_stop_at_the_budget_without_a_verdict_of_speed():
    # Each block pair alternates between "variant 2x quicker" and "2x slower": the interval spans 1 whatever the
    # number of blocks, so the budget ends it and no direction is claimed.
    clock = FakeClock()
    machine = ScriptedMachine(4.0, 1.0, lambda i: 2.0 if i % 2 else 1.0, clock)
    m = measure_pair(machine.block, per_block=2, min_runs=4, ci_width=0.05, max_seconds=0.5, clock=clock)
    s = m.summary()
    assert s["ci_reached"] is False and s["verdict"] == "no measurable difference"
    assert s["ci"][0] < 1 < s["ci"][1] and m.seconds >= 0.5


def test_no_verdict_from_fewer_than_six_block_pairs():
    s = PairMeasurement([2.0] * 5, 1, [2.0] * 5, [1.0] * 5).summary()
    assert s["verdict"] is None and s["speedup"] == 2.0
    assert PairMeasurement([2.0] * 6, 1, [2.0] * 6, [1.0] * 6).summary()["verdict"] == "faster"


def test_verdict_and_block_size():
    assert verdict((1.01, 1.2)) == "faster" and verdict((0.5, 0.9)) == "slower"
    assert verdict((0.99, 1.5)) == verdict((1.0, 1.1)) == "no measurable difference"  # touching 1 is no verdict
    assert runs_per_block(0.038) == 1 and runs_per_block(0.001) == 25 and runs_per_block(0.004) == 12
    assert runs_per_block(0.0) == 25 and runs_per_block(10.0) == 1


# --- the real step, on a real model pair ------------------------------------------------------------------------

@pytest.mark.parametrize("pairing", ["interleaved", "one_alive"])
def test_speedup_step_times_a_real_pair(tmp_path, pairing):
    """Real ORT runs on the real clock: the verdict depends on the machine, so only what holds on any machine is
    checked (the interval holds the ratio, at least 6 block pairs, the load recorded)."""
    from qcompile.steps.arrays import save_samples

    save_samples(tmp_path / "samples.npz", {"x": np.ones((8, 16), np.float32)})
    work = tmp_path / "work"
    work.mkdir()
    model = _tiny_model(tmp_path / "m.onnx")
    ctx = StepContext(inputs={"reference": model, "model": model, "data": tmp_path / "samples.npz"}, workdir=work,
                      outputs=dict(OrtSpeedupStep.outputs))
    p = SpeedupParams(batch_sizes=[1, 4], warmup=1, iterations=6, ci_width=0.5, max_seconds=0.5,
                      runtime={"threads": 1}, pairing=pairing)
    result = OrtSpeedupStep().run(ctx, p)
    assert json.loads(ctx.out("speedup").read_text()) == result
    assert set(result) == {"1", "4", "host_load", "pairing"} and result["pairing"] == pairing
    for point in ("1", "4"):
        s = result[point]
        assert s["blocks"] >= 6 and s["ci"][0] <= s["speedup"] <= s["ci"][1] and s["reference_p50"] > 0
        assert s["verdict"] in ("faster", "slower", "no measurable difference")
    load = result["host_load"]
    assert load["cores"] >= 1 and set(load) >= {"loadavg_before", "loadavg_max", "cpu_pressure", "busy"}


# --- the machine's load -----------------------------------------------------------------------------------------

def test_load_probe_reads_load_and_cpu_pressure(tmp_path, monkeypatch):
    psi = tmp_path / "cpu"
    loads = iter([0.5, 0.7, 3.1, 2.9])
    monkeypatch.setattr("qcompile.steps.host_load.PSI_CPU", psi)
    monkeypatch.setattr("os.getloadavg", lambda: (next(loads), 0.0, 0.0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    clock = FakeClock()
    psi.write_text("some avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\nfull avg10=0 avg60=0 avg300=0 total=0\n")
    probe = LoadProbe(clock=clock)
    probe.sample()
    probe.sample()
    clock.advance(2.0)
    # 1.2 s of the 2 s window some task waited for a CPU: 60% pressure.
    psi.write_text("some avg10=50.00 avg60=10.00 avg300=2.00 total=2200000\nfull avg10=0 avg60=0 avg300=0 total=0\n")
    s = probe.summary()
    assert s == {"loadavg_before": 0.5, "loadavg_max": 3.1, "loadavg_after": 2.9, "cpu_pressure": 0.6,
                 "cpu_stall_s": 1.2, "cores": 2,
                 "busy": "1-minute load average up to 3.10 on 2 cores; a task waited for a CPU 60% of the time"}


def test_busy_needs_load_above_the_cores_or_real_cpu_pressure():
    assert busy_reason({"loadavg_max": 2.0, "cores": 2, "cpu_pressure": 0.05, "cpu_stall_s": 0.2}) is None  # ourselves
    assert busy_reason({"loadavg_max": 2.5, "cores": 2, "cpu_pressure": None}) == \
        "1-minute load average up to 2.50 on 2 cores"
    assert busy_reason({"loadavg_max": 0.3, "cores": 4, "cpu_pressure": 0.3, "cpu_stall_s": 0.6}) == \
        "a task waited for a CPU 30% of the time"  # the load average lags a job that just started
    # 35% of a 70 ms window is 25 ms: one wake-up of another thread, not a busy machine.
    assert busy_reason({"loadavg_max": 0.6, "cores": 2, "cpu_pressure": 0.35, "cpu_stall_s": 0.025}) is None
    assert busy_reason({"loadavg_max": None, "cores": 2, "cpu_pressure": None}) is None  # nothing to read


def test_wait_for_quiet_waits_until_the_load_falls_and_no_longer_than_asked():
    clock = FakeClock(0.0)
    waits = []
    loads = iter([3.0, 2.5, 1.5, 0.8])
    quiet, load = wait_for_quiet(1.0, 60, on_wait=lambda load, left: waits.append((load, left)),
                                 read_load=lambda: next(loads), sleep=clock.advance, clock=clock, poll_s=5)
    assert (quiet, load) == (True, 0.8) and waits == [(3.0, 60), (2.5, 55), (1.5, 50)] and clock.now == 15
    clock = FakeClock(0.0)
    quiet, load = wait_for_quiet(1.0, 12, read_load=lambda: 3.0, sleep=clock.advance, clock=clock, poll_s=5)
    assert (quiet, load) == (False, 3.0) and clock.now == 12  # bounded: 5 + 5 + 2 seconds, then gives up
    assert wait_for_quiet(1.0, 60, read_load=lambda: None) == (True, None)  # no load average: nothing to wait for


@pytest.mark.parametrize("value", ["-1", "abc", "nan", "inf"])
def test_quiet_below_takes_a_number_not_below_zero(tmp_path, cache_dir, value):
    proc = run_cli("build", "--remeasure", "--quiet-below", value, cache=cache_dir, cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"qcompile: bad input: --quiet-below takes a number >= 0, got "
                                                f"{value!r}"]
    assert not (tmp_path / "qcompile-out").exists()


# --- the report -------------------------------------------------------------------------------------------------

def _pair(speedup: float, ci: list[float], verdict_: str) -> dict:
    return {"speedup": speedup, "ci": ci, "verdict": verdict_, "blocks": 12, "runs_per_block": 5,
            "reference_p50": 1.0, "variant_p50": 1.0 / speedup, "ci_reached": True, "seconds": 1.0}


def _lat(p50: float, lo: float, hi: float) -> dict:
    return {"p50": p50, "p90": p50, "p99": p50, "mean": p50, "p50_ci": [lo, hi], "runs": 100, "ci_reached": True}


def _report(busy: str | None) -> dict:
    nodes = {"fp32": {"evaluate": "evaluate.fp32", "benchmark": "benchmark.fp32"},
             "int8": {"evaluate": "evaluate.int8", "benchmark": "benchmark.int8", "compare": "compare.int8",
                      "speedup": "speedup.int8"}}
    lock = {"build_id": "0123456789abcdef", "recipe": {"name": "demo", "target": {"kind": "ort_cpu"}},
            "variants": {v: {"scheme": {"kind": v}, "reference": v == "fp32", "nodes": nodes[v],
                             "artifact": f"model.{v}.onnx"} for v in nodes}}
    quiet = {"loadavg_before": 0.4, "loadavg_max": 0.6, "loadavg_after": 0.6, "cpu_pressure": 0.01,
             "cpu_stall_s": 0.01, "cores": 2, "busy": None}
    loaded = {**quiet, "loadavg_max": 3.6, "busy": busy}
    # Timed apart, the variant's p50 (read in a quiet moment against FP32's busy one) looks 4x faster; the pair
    # timed together says 1.3x at batch 1 and no difference at batch 8.
    outcomes = [StepOutcome("evaluate.fp32", "evaluate.ort", "k1", "ran", result={"scores": {"top1": 0.98}}),
                StepOutcome("evaluate.int8", "evaluate.ort", "k2", "ran", result={"scores": {"top1": 0.979}}),
                StepOutcome("benchmark.fp32", "benchmark.ort", "k3", "ran",
                            result={"1": _lat(4.0, 3.9, 4.1), "8": _lat(8.0, 7.9, 8.1), "host_load": loaded}),
                StepOutcome("benchmark.int8", "benchmark.ort", "k4", "ran",
                            result={"1": _lat(1.0, 0.99, 1.01), "8": _lat(2.0, 1.9, 2.1), "host_load": quiet}),
                StepOutcome("compare.int8", "compare.outputs", "k5", "ran",
                            result={"fidelity": {"cosine_mean": 0.999, "cosine_min": 0.99}, "drop": {"top1": 0.001}}),
                StepOutcome("speedup.int8", "speedup.ort", "k6", "ran",
                            result={"1": _pair(1.3, [1.25, 1.36], "faster"),
                                    "8": _pair(1.01, [0.97, 1.04], "no measurable difference"),
                                    "host_load": loaded, "pairing": "interleaved"})]
    arts = [{"path": f"artifacts/model.{v}.onnx", "size_bytes": s, "sha256": "ab" * 32, "step": "x"}
            for v, s in (("fp32", 1_700_000), ("int8", 450_000))]
    return make_report(lock, outcomes, arts)


def test_report_takes_speedup_and_verdict_from_the_pair_and_says_the_machine_was_busy(tmp_path, capsys):
    from qcompile.build_command import print_outcome
    from qcompile.builds.build import BuildResult

    why = "1-minute load average up to 3.60 on 2 cores"
    report = _report(why)
    assert report["speedup_p50"]["int8"] == {"1": 1.3, "8": 1.01}  # not 4.0 and 4.0 from the two p50s
    assert report["speedup_verdict"]["int8"] == {"1": "faster", "8": "no measurable difference"}
    assert report["speedup_ci"]["int8"] == {"1": [1.25, 1.36], "8": [0.97, 1.04]}
    assert report["busy"] == {"benchmark.fp32": why, "speedup.int8": why}
    write_markdown(report, tmp_path / "report.md")
    md = (tmp_path / "report.md").read_text()
    assert "int8 speed-up over fp32 (timed as a pair, 95% CI): batch 1: 1.30x faster [1.25x, 1.36x], batch 8: " \
           "no measurable difference [0.97x, 1.04x]." in md
    assert f"**Measured on a busy machine**: benchmark.fp32: {why}; speedup.int8: {why}." in md
    print_outcome(BuildResult(Path(tmp_path), report["build_id"], report, []))
    line = capsys.readouterr().out.replace("\n", "")
    assert "int8 latency at batch 1: 1.30x faster than fp32, at batch 8: no measurable difference" in line
    assert f"measured on a busy machine: benchmark.fp32: {why} (and 1 more measurements)" in line


def test_a_quiet_build_says_nothing_of_load_in_its_last_line(tmp_path, capsys):
    from qcompile.build_command import print_outcome
    from qcompile.builds.build import BuildResult

    report = _report(None)
    assert report["busy"] == {}
    print_outcome(BuildResult(Path(tmp_path), report["build_id"], report, []))
    assert "busy" not in capsys.readouterr().out


# --- a sweep places variants by their pairs ---------------------------------------------------------------------

def test_sweep_places_variants_by_their_paired_speedup_not_their_moment(tmp_path):
    """Two equally accurate variants: job 0 was timed alone while the machine was busy (p50 0.05 ms), job 1 while it
    was quiet (0.02 ms), so apart job 1 looks 2.5x faster. Timed beside FP32, job 0 is 2x faster than FP32 and job 1
    only 1.25x: job 0 is the one to star. FP32 was timed once per job here (0.04 and 0.06 ms, as --remeasure does):
    both sit on the one scale of the sweep's FP32 p50, the median 0.05 ms."""
    from qcompile.report.sweep import collect_sweep, write_sweep_report

    from .test_sweep_report import make_job, make_report

    d = tmp_path / "sweep"
    for job, p50, fp32, pair, ci in ((0, 0.05, 0.04, 2.0, [1.9, 2.1]), (1, 0.02, 0.06, 1.25, [1.2, 1.3])):
        rep = make_report(0.96, p50, 450_000, fp32_p50=fp32)
        rep["speedup_p50"] = {"int8": {"1": pair, "8": pair}}
        rep["speedup_ci"] = {"int8": {"1": ci, "8": ci}}
        make_job(d, job, [f"quant.calibration.method={'minmax' if job == 0 else 'entropy'}"], rep)
    rows = collect_sweep(d)
    assert rows[0]["p50_ms_bs1"] == 0.025 and rows[1]["p50_ms_bs1"] == 0.04  # 0.05 / the pair's speed-up
    assert (rows[0]["p50_ci_lo_ms_bs1"], rows[0]["p50_ci_hi_ms_bs1"]) == (round(0.05 / 2.1, 4), round(0.05 / 1.9, 4))
    assert rows[0]["measured_p50_ms_bs1"] == 0.05 and rows[1]["measured_p50_ms_bs1"] == 0.02  # timed alone
    write_sweep_report(d, batch=1)
    with (d / "sweep.csv").open() as f:
        assert [r["pareto"] for r in csv.DictReader(f)] == ["1", "0"]
    assert "timed as a pair" in (d / "sweep.md").read_text()
